"""`python -m opengemma`: the `opengemma` command."""

import sys

from opengemma.cli import main

sys.exit(main())
