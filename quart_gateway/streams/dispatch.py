"""The live streams' ASGI path: `/ws` and `GET /events` are served here, not through Quart.

A live stream is one long request that mostly waits. Quart's request machinery (a receiver
task, a handler task, an unbounded message queue and request contexts per connection) doubled
the memory of an idle connection: measured with 2,000 WebSocket connections, 42 KiB each
through Quart against 21 KiB for Hypercorn alone. `StreamDispatcher` wraps Quart's ASGI app
and hands these two routes to plain ASGI handlers (`routes/ws.py`, `routes/sse.py`); every
other request, the CORS preflight of `/events` included, goes to Quart as before.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart

from quart_gateway.ops import logs
from quart_gateway.services import EXTENSION_KEY, Services
from quart_gateway.streams import sse, ws
from quart_gateway.streams.asgi import Receive, Scope, Send, StreamRequest

logger = logging.getLogger(__name__)

WS_PATHS = frozenset({"/ws", "/ws/"})
SSE_PATH = "/events"


class StreamDispatcher:
    """ASGI middleware installed as `app.asgi_app` by `create_app`."""

    def __init__(self, app: Quart, inner: Any) -> None:
        self._app = app
        self._inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and scope["path"] in WS_PATHS:
            handler = ws.serve
        elif kind == "http" and scope["method"] == "GET" and scope["path"] == SSE_PATH:
            handler = sse.serve
        else:
            return await self._inner(scope, receive, send)  # type: ignore[no-any-return]
        svc = self._app.extensions.get(EXTENSION_KEY)
        if not isinstance(svc, Services):  # not serving (no lifespan): let Quart answer
            return await self._inner(scope, receive, send)  # type: ignore[no-any-return]
        request = StreamRequest.from_scope(scope)
        with logs.bound(correlation_id=request.correlation_id):
            try:
                await handler(svc, request, receive, send)
            except Exception:
                # Logged here, with the request's context; Hypercorn then answers a response
                # that never started with a 500 and closes a started one.
                logger.exception("live stream handler failed")
