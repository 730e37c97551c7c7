"""CORS_ORIGINS: the one policy for the REST API, `/events` and the `Origin` check of `/ws`.

Quart routes get their headers (preflight included) from quart-cors, configured by
`install()`. The two stream routes are plain ASGI (see streams/dispatch.py), so they ask the
same policy: `/events` adds `stream_headers()` for an allowed origin, and `/ws` refuses a
browser whose page is on an origin not in the list (`allows()`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quart import Quart
from quart_cors import cors

from quart_gateway.ops.correlation import CORRELATION_HEADER

ALLOW_HEADERS = ("Authorization", "Last-Event-ID", "Content-Type", CORRELATION_HEADER)
EXPOSE_HEADERS = (CORRELATION_HEADER, "Retry-After")
ALLOW_METHODS = ("GET", "POST", "OPTIONS")  # POST: /v1/stream-tickets
MAX_AGE_SECONDS = 600


def _normalise(origin: str) -> str:
    return origin.strip().rstrip("/")


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Origins allowed besides the gateway's own; empty means same origin only."""

    origins: frozenset[str]

    @classmethod
    def of(cls, origins: Iterable[str]) -> CorsPolicy:
        return cls(frozenset(_normalise(o) for o in origins if o.strip()))

    def allows(self, origin: str | None) -> bool:
        """Whether a WebSocket may be opened from a page on `origin`.

        Without a list every origin is allowed (the token is the credential), and so is a
        client that sends no `Origin` (not a browser).
        """
        return not self.origins or not origin or _normalise(origin) in self.origins

    def stream_headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        """The headers quart-cors would add to a response for `origin`: none unless listed."""
        if not origin or _normalise(origin) not in self.origins:
            return ()
        return (
            ("Access-Control-Allow-Origin", _normalise(origin)),
            ("Access-Control-Expose-Headers", ", ".join(EXPOSE_HEADERS)),
            ("Vary", "Origin"),
        )

    def install(self, app: Quart) -> None:
        """Configure quart-cors for every Quart route (the REST API, `OPTIONS /events`)."""
        if not self.origins:
            return
        cors(
            app,
            allow_origin=sorted(self.origins),
            allow_headers=list(ALLOW_HEADERS),
            allow_methods=list(ALLOW_METHODS),
            expose_headers=list(EXPOSE_HEADERS),
            max_age=MAX_AGE_SECONDS,
        )
