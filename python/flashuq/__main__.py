"""``python -m flashuq ...`` is the ``flashuq`` command line (flashuq.cli)."""

import os
import sys

# `python -m` puts the working directory first on sys.path. Run from a flashuq checkout, its top-level
# kernels/ folder (the Triton kernels, installed as flashuq.kernels) would then shadow Hugging Face's
# `kernels` package, which transformers imports. The command line never imports from the working
# directory, so it goes (docs/environment.md).
_cwd = os.path.realpath(os.getcwd())
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _cwd]

from .cli import main  # noqa: E402

sys.exit(main())
