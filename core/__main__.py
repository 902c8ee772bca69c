"""`python -m core ...` is `simclr ...` (what torchrun and the TUI launch)."""

import sys

from core.cli import main

sys.exit(main())
