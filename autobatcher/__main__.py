"""``python -m autobatcher``: the command line."""

from __future__ import annotations

import sys

from autobatcher._cli import main

if __name__ == "__main__":
    sys.exit(main())
