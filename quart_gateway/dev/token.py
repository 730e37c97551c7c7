"""Mint a JWT for local development: `python -m quart_gateway.dev.token demo-user`.

It signs with JWT_SECRET_KEY from the environment (HS* algorithms only), so it can only mint
what anyone holding that secret could mint anyway. `mint()` is also what `POST /dev/token`
calls; outside dev mode the gateway serves no endpoint for this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import jwt

from quart_gateway.errors import ConfigError, GatewayError
from quart_gateway.settings import JWT_HMAC, Settings


class DevTokenUnavailableError(GatewayError):
    status_code = 501
    code = "dev_token_unavailable"
    message = "dev tokens are signed with JWT_SECRET_KEY; set an HS* JWT_ALGORITHM"


@dataclass(frozen=True)
class DevToken:
    token: str
    expires_at: int  # Unix seconds, the token's `exp`


def mint(settings: Settings, sub: str, ttl: int) -> DevToken:
    """A token for `sub`, valid for `ttl` seconds, with the `aud`/`iss` the gateway expects.

    Raises DevTokenUnavailableError unless the gateway verifies with JWT_SECRET_KEY (HS*).
    """
    if settings.jwt_algorithm not in JWT_HMAC or settings.jwt_secret_key is None:
        raise DevTokenUnavailableError()
    expires_at = int(time.time()) + ttl
    claims: dict[str, object] = {"sub": sub, "exp": expires_at}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    token = jwt.encode(claims, str(settings.jwt_secret_key), algorithm=settings.jwt_algorithm)
    return DevToken(token=token, expires_at=expires_at)


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
    try:
        minted = mint(settings, args.sub, args.ttl)
    except DevTokenUnavailableError:
        print("devtoken signs with JWT_SECRET_KEY (HS256/384/512) only", file=sys.stderr)
        return 2
    print(minted.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
