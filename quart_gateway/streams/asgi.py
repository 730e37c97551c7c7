"""Plain-ASGI helpers for the stream handlers (see dispatch.py for why)."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from quart_gateway.admission.auth import bearer_token
from quart_gateway.admission.pipeline import Attempt, Transport
from quart_gateway.ops.correlation import CORRELATION_HEADER, correlation_id

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


_READ_HEADERS = frozenset({"authorization", "origin", "last-event-id", CORRELATION_HEADER.lower()})
_READ_PARAMS = frozenset({"token", "ticket", "last_event_id"})


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What the stream handlers read from an ASGI scope: the few lower-case headers and
    first query values they use, and the correlation id."""

    headers: dict[str, str]
    query: dict[str, str]
    correlation_id: str

    @classmethod
    def from_scope(cls, scope: Scope) -> StreamRequest:
        # Only what the handlers read: the request lives as long as its stream.
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in _READ_HEADERS:
                headers[name] = raw_value.decode("latin-1")
        query: dict[str, str] = {}
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if key in _READ_PARAMS:
                query.setdefault(key, value)
        supplied = headers.get(CORRELATION_HEADER.lower())
        return cls(headers, query, correlation_id(supplied))

    def attempt(self, transport: Transport) -> Attempt:
        """The credentials admission weighs: `Authorization: Bearer`, `?ticket=`, `?token=`."""
        return Attempt(
            transport,
            self.headers.get("origin"),
            bearer_token(self.headers.get("authorization")),
            ticket=self.query.get("ticket"),
            query_token=self.query.get("token"),
        )

    def response_headers(self, *extra: tuple[str, str]) -> list[tuple[bytes, bytes]]:
        """The correlation id and `extra`. Hypercorn keeps an event stream's headers for as
        long as it streams: the `extra` pairs (the same few for every stream) are shared."""
        own = (CORRELATION_HEADER.lower().encode("latin-1"), self.correlation_id.encode("latin-1"))
        return [own, *(_encoded(name, value) for name, value in extra)]


@functools.lru_cache(maxsize=512)
def _encoded(name: str, value: str) -> tuple[bytes, bytes]:
    return name.lower().encode("latin-1"), value.encode("latin-1")


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})
