"""`python -m quart_gateway`: serve with clean SIGTERM draining (see `server.py`)."""

from __future__ import annotations

import sys

from quart_gateway.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
