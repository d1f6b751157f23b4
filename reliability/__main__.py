"""`python -m reliability`: the reliability campaign (see reliability/cli.py)."""

import sys

from reliability.cli import main

sys.exit(main())
