"""``python -m meprop`` runs the command line (see meprop.cli)."""

import sys

from meprop.cli import main

sys.exit(main())
