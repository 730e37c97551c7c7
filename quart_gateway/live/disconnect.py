"""The catalogue of ways the gateway ends a stream, and what the client should do for each.

The same `Disconnect` drives both transports: a WebSocket closes with `code` and `reason`; an
SSE stream sends `{"event": "disconnect", "code", "reason", "reconnect"}` and ends. Codes follow
RFC 6455 where one fits, and the 4000-4999 private range otherwise. `docs/protocol.md` is the
client-facing copy of this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Disconnect:
    code: int
    reason: str  # short, stable, machine-readable; at most 123 bytes (RFC 6455)
    reconnect: bool  # whether the client should reconnect on its own
    advice: str  # for docs and logs

    def payload(self, timestamp: str) -> dict[str, Any]:
        return {
            "event": "disconnect",
            "code": self.code,
            "reason": self.reason,
            "reconnect": self.reconnect,
            "timestamp": timestamp,
        }


SHUTDOWN = Disconnect(
    1012, "server_restart", True, "Reconnect after a short random delay; resume with the last id."
)
INVALID_TOKEN = Disconnect(
    1008, "invalid_token", False, "Do not retry with the same token; get a new one first."
)
ORIGIN_NOT_ALLOWED = Disconnect(
    1008, "origin_not_allowed", False, "The page's origin is not in CORS_ORIGINS."
)
INTERNAL_ERROR = Disconnect(1011, "internal_error", True, "Reconnect with backoff.")
TOKEN_EXPIRED = Disconnect(
    4002, "token_expired", True, "Refresh the token, then reconnect with the last id."
)
SLOW_CONSUMER = Disconnect(
    4008,
    "slow_consumer",
    True,
    "The client fell too far behind. Reconnect with the last id; re-hydrate on resync.",
)
TOO_MANY_CONNECTIONS = Disconnect(
    4029,
    "too_many_connections",
    True,
    "Close another tab or connection; retry later with backoff.",
)
# Ends a stream without a farewell: the peer is gone, nobody is there to tell.
CLIENT_GONE = Disconnect(1001, "client_gone", False, "The client went away.")

CATALOGUE: tuple[Disconnect, ...] = (
    SHUTDOWN,
    INVALID_TOKEN,
    ORIGIN_NOT_ALLOWED,
    INTERNAL_ERROR,
    TOKEN_EXPIRED,
    SLOW_CONSUMER,
    TOO_MANY_CONNECTIONS,
)
