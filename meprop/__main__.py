"""``python -m meprop`` runs the suite's command line (:mod:`meprop.lab.cli`).

The command line belongs to the lab, which needs the ``bench`` extra; without it this
says so in one line instead of a traceback.
"""

import sys

from meprop.lab import require_extra

require_extra()
from meprop.lab.cli import main  # noqa: E402  (after the extra is known to be installed)

sys.exit(main())
