"""The meprop.optim tests import their twin models and references from optim_helpers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
