"""``python -m flashuq ...`` is the ``flashuq`` command line (flashuq.cli)."""

import sys

from .cli import main

sys.exit(main())
