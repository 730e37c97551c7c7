"""What the WebSocket and SSE handlers share: per-stream bookkeeping and the frame source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from quart_gateway.admission.auth import Principal
from quart_gateway.admission.pipeline import Admitted, Transport
from quart_gateway.live import disconnect
from quart_gateway.live.stream import StreamGuard, frames
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import Frame
from quart_gateway.ops import logs
from quart_gateway.services import Services
from quart_gateway.streams.asgi import Receive

# The ASGI message that tells a handler its client went away.
_GONE = {"ws": "websocket.disconnect", "sse": "http.disconnect"}


@asynccontextmanager
async def live_stream(
    svc: Services, principal: Principal, transport: Transport, receive: Receive
) -> AsyncIterator[Subscriber]:
    """Register one live connection: multiplexer, timers, metrics, drain tracking, and a
    reader that closes the subscriber with CLIENT_GONE when the ASGI disconnect arrives.

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
            guard = StreamGuard(sub, principal, svc.settings.max_connection_seconds)
            if svc.lifecycle.draining:  # SIGTERM arrived while this stream was being set up
                sub.close(disconnect.SHUTDOWN)
            reader = asyncio.create_task(_read_until_gone(receive, _GONE[transport], sub))
            try:
                yield sub
            finally:
                guard.close()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                reason = sub.close_reason or disconnect.CLIENT_GONE
                svc.metrics.disconnects.labels(reason=reason.reason).inc()
    finally:
        svc.metrics.connections.labels(transport=transport).dec()
        svc.lifecycle.stream_closed()


def stream_frames(
    svc: Services,
    sub: Subscriber,
    transport: Transport,
    last_event_id: str | None,
    admitted: Admitted,
) -> AsyncIterator[list[Frame]]:
    return frames(
        sub,
        transport=transport,
        heartbeat_interval=svc.settings.heartbeat_interval_seconds,
        last_event_id=last_event_id,
        history=svc.history,
        metrics=svc.metrics,
        on_connected=admitted.set_up,
    )


async def _read_until_gone(receive: Receive, gone: str, sub: Subscriber) -> None:
    """Read (and drop) what the client sends until it goes. Hypercorn bounds what it buffers
    for us, so a client that floods the socket is slowed down, not kept in memory."""
    while (await receive())["type"] != gone:
        pass
    sub.close(disconnect.CLIENT_GONE)
