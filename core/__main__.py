"""``python -m core``: the core command line."""

import sys

from .cli import main

sys.exit(main())
