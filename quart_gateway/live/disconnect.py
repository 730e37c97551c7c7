"""The catalogue of ways the gateway ends a stream, and what the client should do for each.

The same `Ending` drives both transports: a WebSocket closes with `code` and `reason`; an SSE
stream sends a `disconnect` message (`events.Disconnect`, built by `live.messages`) and ends.
Codes follow RFC 6455 where one fits, and the 4000-4999 private range otherwise.
`docs/protocol.md` is the client-facing copy of this table, with what a client should do for
each entry; `tests/unit/test_disconnect.py` keeps the two in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ending:
    code: int
    reason: str  # short, stable, machine-readable; at most 123 bytes (RFC 6455)
    reconnect: bool  # whether the client should reconnect on its own


SHUTDOWN = Ending(1012, "server_restart", True)
INVALID_TOKEN = Ending(1008, "invalid_token", False)
ORIGIN_NOT_ALLOWED = Ending(1008, "origin_not_allowed", False)
INTERNAL_ERROR = Ending(1011, "internal_error", True)
TOKEN_EXPIRED = Ending(4002, "token_expired", True)
SLOW_CONSUMER = Ending(4008, "slow_consumer", True)
TOO_MANY_CONNECTIONS = Ending(4029, "too_many_connections", True)
# Admission control: the worker is setting up more streams than it can; come back later.
OVERLOADED = Ending(1013, "overloaded", True)
# MAX_CONNECTION_SECONDS reached: reconnect at once, most likely to another worker or host.
MAX_LIFETIME = Ending(4000, "max_lifetime", True)
# Ends a stream without a farewell: the peer is gone, nobody is there to tell.
CLIENT_GONE = Ending(1001, "client_gone", False)

CATALOGUE: tuple[Ending, ...] = (
    SHUTDOWN,
    INVALID_TOKEN,
    ORIGIN_NOT_ALLOWED,
    INTERNAL_ERROR,
    TOKEN_EXPIRED,
    SLOW_CONSUMER,
    TOO_MANY_CONNECTIONS,
    OVERLOADED,
    MAX_LIFETIME,
)


def retry_hint_ms(ending: Ending) -> int | None:
    """The jittered reconnect delay the gateway asks for, or None for the client's own.

    Spread over a few seconds, so that the clients a restart or an overload sends away do
    not all come back in the same instant.
    """
    if ending is SHUTDOWN:
        return random.randint(500, 3000)
    if ending is OVERLOADED:
        return random.randint(1000, 5000)
    if ending is MAX_LIFETIME:
        return random.randint(0, 1000)
    return None
