"""`python -m bench [--smoke] ...`: see `bench.options` for the flags."""

from __future__ import annotations

import sys

from bench.options import parse
from bench.runner import main

if __name__ == "__main__":
    sys.exit(main(parse()))
