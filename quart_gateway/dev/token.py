"""Mint a JWT for local development: `python -m quart_gateway.dev.token demo-user`.

It signs with JWT_SECRET_KEY from the environment (HS* algorithms only), so it can only mint
what anyone holding that secret could mint anyway. The gateway serves no endpoint for this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jwt

from quart_gateway.errors import ConfigError
from quart_gateway.settings import JWT_HMAC, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quart_gateway.dev.token")
    parser.add_argument("sub", help="user id (the token's `sub`)")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until `exp` (3600)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.jwt_algorithm not in JWT_HMAC or settings.jwt_secret_key is None:
        print("devtoken signs with JWT_SECRET_KEY (HS256/384/512) only", file=sys.stderr)
        return 2
    claims: dict[str, object] = {"sub": args.sub, "exp": int(time.time()) + args.ttl}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    print(jwt.encode(claims, str(settings.jwt_secret_key), algorithm=settings.jwt_algorithm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
