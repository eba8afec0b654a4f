"""``python -m vision``: the vision command line."""

import sys

from .cli import main

sys.exit(main())
