"""`python -m bot.cli`: the same as the `imgbot` command."""

import sys

from bot.cli import main

sys.exit(main())
