"""The live streams' ASGI path: `/ws` and `GET /events` are served here, not through Quart.

A live stream is one long request that mostly waits. Quart's request machinery (a receiver
task, a handler task, an unbounded message queue and request contexts per connection) doubled
the memory of an idle connection: measured with 2,000 WebSocket connections, 42 KiB each
through Quart against 21 KiB for Hypercorn alone. `StreamingQuart` overrides Quart's ASGI entry
and hands these two routes to plain ASGI handlers (`ws.py`, `sse.py` beside this module); every
other request, the CORS preflight of `/events` included, goes to Quart as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from hypercorn.typing import Scope as QuartScope
from quart import Quart

from quart_gateway.ops import logs
from quart_gateway.services import EXTENSION_KEY, Services
from quart_gateway.streams import sse, ws
from quart_gateway.streams.asgi import Receive, Scope, Send, StreamRequest

logger = logging.getLogger(__name__)

WS_PATHS = frozenset({"/ws", "/ws/"})
SSE_PATH = "/events"


class StreamingQuart(Quart):
    """Quart, with `/ws` and `GET /events` answered by the plain-ASGI stream handlers."""

    async def asgi_app(
        self, scope: QuartScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        handler = _stream_handler(scope)
        svc = self.extensions.get(EXTENSION_KEY)
        if handler is None or not isinstance(svc, Services):  # not serving: Quart answers
            return await super().asgi_app(scope, receive, send)
        request = StreamRequest.from_scope(cast(Scope, scope))
        with logs.bound(correlation_id=request.correlation_id):
            try:
                # The handlers speak ASGI messages as plain dicts.
                await handler(svc, request, cast(Receive, receive), cast(Send, send))
            except Exception:
                # Logged here, with the request's context; Hypercorn then answers a response
                # that never started with a 500 and closes a started one.
                logger.exception("live stream handler failed")


Handler = Callable[[Services, StreamRequest, Receive, Send], Awaitable[None]]


def _stream_handler(scope: QuartScope) -> Handler | None:
    if scope["type"] == "websocket" and scope["path"] in WS_PATHS:
        return ws.serve
    if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == SSE_PATH:
        return sse.serve
    return None
