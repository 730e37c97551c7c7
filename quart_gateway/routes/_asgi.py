"""Plain-ASGI helpers for the stream handlers (see quart_gateway/asgi.py for why)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from quart_gateway.correlation import CORRELATION_HEADER, correlation_id
from quart_gateway.services import Services

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What the stream handlers read from an ASGI scope: lower-case headers, first query
    values, the correlation id."""

    headers: dict[str, str]
    query: dict[str, str]
    correlation_id: str

    @classmethod
    def from_scope(cls, scope: Scope) -> StreamRequest:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query: dict[str, str] = {}
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            query.setdefault(key, value)
        supplied = headers.get(CORRELATION_HEADER.lower())
        return cls(headers, query, correlation_id(supplied))

    def response_headers(self, *extra: tuple[str, str]) -> list[tuple[bytes, bytes]]:
        pairs = [(CORRELATION_HEADER, self.correlation_id), *extra]
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def cors_headers(svc: Services, request: StreamRequest) -> tuple[tuple[str, str], ...]:
    """The CORS response headers quart-cors would add, for an allowed `Origin`."""
    origin = request.headers.get("origin", "").rstrip("/")
    if not origin or origin not in svc.settings.cors_origins:
        return ()
    return (
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", f"{CORRELATION_HEADER}, Retry-After"),
        ("Vary", "Origin"),
    )


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
