"""JWT verification: token in, `Principal` out. No Quart imports.

The algorithm list is always the single configured algorithm, so `alg: none` and
algorithm-confusion tokens (an HMAC token signed with the public key) fail.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import jwt

from events.channels import valid_user_id
from quart_gateway.errors import AuthError
from quart_gateway.settings import JWT_HMAC, Settings

# Verified tokens remembered per worker (a few MiB at most).
VERIFIED_CACHE_SIZE = 10_000
# Real tokens are well under 2 KiB; a larger one is refused before any parsing.
MAX_TOKEN_CHARS = 8192
# The largest `exp` accepted: 9999-12-31, far beyond any real token, and safely a float.
MAX_EXP = 253_402_300_799


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    expires_at: float  # unix seconds, from `exp`


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._algorithm = settings.jwt_algorithm
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        # Tokens verified before, until their `exp`: a reconnect storm presents the same
        # tokens again, and a verification costs about 0.2 ms of CPU each.
        self._verified: dict[str, Principal] = {}
        if settings.jwt_algorithm in JWT_HMAC:
            assert settings.jwt_secret_key is not None
            self._key = str(settings.jwt_secret_key)
        elif settings.jwt_public_key:
            self._key = settings.jwt_public_key
        else:
            assert settings.jwt_jwks_url is not None
            self._jwks = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=settings.upstream_timeout_seconds,  # bounds the key fetch, like upstreams
            )

    async def verify(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("Missing token")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("Token too large")
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() <= cached.expires_at + self._leeway:
                return cached
            del self._verified[token]
        principal = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = principal
        return principal

    async def _verify(self, token: str) -> Principal:
        key = self._key
        if self._jwks is not None:
            try:  # PyJWKClient fetches with urllib: keep the event loop free
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            except jwt.PyJWKClientError as exc:
                raise AuthError("Token signing key not found") from exc
            except jwt.PyJWTError as exc:
                raise AuthError("Malformed token") from exc
        return self.verify_with_key(token, key)

    def verify_with_key(self, token: str, key: Any) -> Principal:
        options: dict[str, Any] = {"require": ["exp", "sub"]}
        if self._audience is None:
            options["verify_aud"] = False
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("Token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(_reason(exc)) from exc
        except (jwt.PyJWTError, TypeError, ValueError, OverflowError) as exc:
            # A key that does not fit the token's algorithm (e.g. from a mixed JWKS) makes
            # pyjwt raise outside its InvalidTokenError tree: still the token's fault.
            raise AuthError("Token signature invalid") from exc
        return principal_of(claims)


def principal_of(claims: dict[str, Any]) -> Principal:
    """The user a verified token names. Pure; raises only AuthError.

    `sub` must follow the user-id rule (`events.channels.valid_user_id`): it names a Redis
    channel, a history stream and log fields, so an id that cannot be encoded or that holds
    a line break is refused here, once, instead of failing deeper down. `exp` must be a
    finite number within the range of a timestamp.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError("Token has no subject")
    if not valid_user_id(sub):
        raise AuthError("Token subject is not a valid user id")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthError("Token lacks a numeric 'exp' claim")
    if not 0 <= exp <= MAX_EXP:
        raise AuthError("Token expiry out of range")
    return Principal(user_id=sub, expires_at=float(exp))


def _reason(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"Token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "Token audience not accepted"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "Token issuer not accepted"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "Token not yet valid"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "Token algorithm not accepted"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "Token signature invalid"
    return "Malformed token"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
