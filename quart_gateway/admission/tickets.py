"""Single-use stream tickets: a short-lived opaque credential for `/ws` and `/events` URLs.

A browser cannot set headers on EventSource or WebSocket, so a JWT would have to travel in the
URL, where proxies, browser history and access logs keep it. Instead the page trades its JWT
(in an `Authorization` header) for a ticket, `POST /v1/stream-tickets`, and puts the ticket in
the stream URL. The ticket names the JWT's user and `exp`, lives `STREAM_TICKET_TTL_SECONDS`
at most (never past the JWT's `exp`), and works once: Redis `GETDEL` hands it to exactly one
stream, whichever worker or host asks first. No Quart imports.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time

from redis.exceptions import ResponseError

from events.channels import valid_user_id
from quart_gateway.admission.auth import MAX_EXP, Principal
from quart_gateway.aio.batching import Batcher
from quart_gateway.errors import AuthError, GatewayError
from quart_gateway.ops.metrics import Metrics
from quart_gateway.redis_kinds import REDIS_FAILURES, RedisClient

logger = logging.getLogger(__name__)

KEY_PREFIX = "stream-ticket:"
# Tickets are `secrets.token_urlsafe(32)`: 43 characters. Anything much longer is not one.
MAX_TICKET_CHARS = 128
REDEEM_BATCH_LIMIT = 500  # GETDELs per round trip when many clients reconnect at once


class TicketStoreUnavailableError(GatewayError):
    status_code = 503
    code = "ticket_store_unavailable"
    message = "Stream tickets cannot be issued right now; retry shortly"


def ticket_key(ticket: str) -> str:
    return KEY_PREFIX + ticket


class TicketStore:
    def __init__(self, client: RedisClient, ttl_seconds: int, metrics: Metrics) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._metrics = metrics
        self._redeem: Batcher[str, bytes | str | None] = Batcher(
            self._getdel, limit=REDEEM_BATCH_LIMIT, isolate=(ResponseError,)
        )

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    async def issue(self, principal: Principal) -> tuple[str, int]:
        """A new ticket for `principal`, and its lifetime in seconds."""
        remaining = math.ceil(principal.expires_at - time.time())
        ttl = max(1, min(self._ttl, remaining))
        ticket = secrets.token_urlsafe(32)
        value = json.dumps([principal.user_id, principal.expires_at])
        try:
            await self._redis.set(ticket_key(ticket), value, ex=ttl)
        except REDIS_FAILURES as exc:
            self._metrics.redis_errors.labels(operation="stream_ticket").inc()
            logger.warning("stream ticket not stored: %s", type(exc).__name__)
            raise TicketStoreUnavailableError() from exc
        return ticket, ttl

    async def redeem(self, ticket: str) -> Principal:
        """The user a ticket names; the ticket is spent. Raises AuthError for an unknown,
        spent or expired ticket, and when the store cannot be read (fail closed)."""
        if not ticket or len(ticket) > MAX_TICKET_CHARS:
            raise AuthError("Stream ticket not valid")
        try:
            raw = await self._redeem.call(ticket_key(ticket))
        except REDIS_FAILURES as exc:
            self._metrics.redis_errors.labels(operation="stream_ticket").inc()
            logger.warning("stream ticket not checked: %s", type(exc).__name__)
            raise AuthError("Stream ticket cannot be checked") from exc
        if raw is None:
            raise AuthError("Stream ticket unknown, used or expired")
        principal = _principal(raw)
        if principal is None:
            logger.warning("stream ticket with an unreadable value refused")
            raise AuthError("Stream ticket not valid")
        if principal.expires_at <= time.time():
            raise AuthError("Token expired")
        return principal

    async def _getdel(self, keys: list[str]) -> list[bytes | str | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.getdel(key)
            results: list[bytes | str | None] = await pipe.execute()
        return results


def _principal(raw: bytes | str) -> Principal | None:
    try:
        user_id, exp = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(user_id, str) or not valid_user_id(user_id):
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 <= exp <= MAX_EXP:
        return None
    return Principal(user_id=user_id, expires_at=float(exp))
