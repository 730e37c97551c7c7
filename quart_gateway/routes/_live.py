"""What the WebSocket and SSE handlers share: admission checks and per-stream bookkeeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from quart_gateway import disconnect, logs
from quart_gateway.auth import Principal
from quart_gateway.services import Services
from quart_gateway.stream import StreamGuard
from quart_gateway.subscriber import Subscriber

Transport = Literal["ws", "sse"]


@asynccontextmanager
async def live_stream(
    svc: Services, principal: Principal, transport: Transport
) -> AsyncIterator[Subscriber]:
    """Register one live connection: multiplexer, timers, metrics, drain tracking.

    Everything is undone on exit, including when the handler is cancelled (a stuck write, a
    shutdown). Send the farewell inside the block: the stall guard covers it. (The connection
    lease is the handler's: it is taken before the stream exists.)
    """
    user_id = principal.user_id
    svc.lifecycle.stream_opened()
    svc.metrics.connections.labels(transport=transport).inc()
    svc.metrics.connections_total.labels(transport=transport).inc()
    try:
        async with svc.mux.subscribe(user_id) as sub:
            logs.bind(conn_id=sub.conn_id)
            guard = StreamGuard(sub, principal)
            if svc.lifecycle.draining:  # SIGTERM arrived while this stream was being set up
                sub.close(disconnect.SHUTDOWN)
            try:
                yield sub
            finally:
                guard.close()
                reason = sub.close_reason or disconnect.CLIENT_GONE
                svc.metrics.disconnects.labels(reason=reason.reason).inc()
    finally:
        svc.metrics.connections.labels(transport=transport).dec()
        svc.lifecycle.stream_closed()
