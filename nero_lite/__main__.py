"""``python -m nero_lite``: the command line of :mod:`nero_lite.cli`."""

import sys

from .cli import main

sys.exit(main())
