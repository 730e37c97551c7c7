"""What the WebSocket and SSE handlers share: per-stream bookkeeping and the frame source."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from quart_gateway.admission.auth import Principal
from quart_gateway.admission.pipeline import Admitted, Transport
from quart_gateway.live import disconnect
from quart_gateway.live.multiplexer import Membership
from quart_gateway.live.stream import StreamGuard, frames
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import Frame
from quart_gateway.ops import logs
from quart_gateway.services import Services
from quart_gateway.streams.asgi import Receive

# The ASGI message that tells a handler its client went away.
_GONE = {"ws": "websocket.disconnect", "sse": "http.disconnect"}


def live_stream(
    svc: Services, principal: Principal, transport: Transport, receive: Receive
) -> LiveStream:
    """`async with live_stream(...) as sub`: one registered live connection."""
    return LiveStream(svc, principal, transport, receive)


class LiveStream:
    """Register one live connection: multiplexer, timers, metrics, drain tracking, and a
    reader that closes the subscriber with CLIENT_GONE when the ASGI disconnect arrives.

    Everything is undone on exit, including when the handler is cancelled (a stuck write, a
    shutdown). Send the farewell inside the block: the stall guard covers it. (The connection
    lease is the handler's: it is taken before the stream exists.) A slotted class rather
    than an `@asynccontextmanager`: one lives as long as each connection.
    """

    __slots__ = (
        "_guard",
        "_membership",
        "_principal",
        "_reader",
        "_receive",
        "_sub",
        "_svc",
        "_transport",
    )

    def __init__(
        self, svc: Services, principal: Principal, transport: Transport, receive: Receive
    ) -> None:
        self._svc = svc
        self._principal = principal
        self._transport = transport
        self._receive = receive
        self._membership: Membership | None = None
        self._sub: Subscriber | None = None
        self._guard: StreamGuard | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        if self._membership is not None:
            raise RuntimeError("a live stream is entered once")
        svc, transport = self._svc, self._transport
        svc.lifecycle.stream_opened()
        svc.metrics.connections.labels(transport=transport).inc()
        svc.metrics.connections_total.labels(transport=transport).inc()
        try:
            membership = svc.mux.subscribe(self._principal.user_id)
            sub = self._sub = await membership.__aenter__()
            self._membership = membership
            logs.bind(conn_id=sub.conn_id)
            self._guard = StreamGuard(sub, self._principal, svc.settings.max_connection_seconds)
            if svc.lifecycle.draining:  # SIGTERM arrived while this stream was being set up
                sub.close(disconnect.SHUTDOWN)
            self._reader = asyncio.create_task(
                _read_until_gone(self._receive, _GONE[transport], sub)
            )
        except BaseException:
            await self.__aexit__(*sys.exc_info())  # undoes as much as was done
            raise
        return sub

    async def __aexit__(self, *exc_info: object) -> None:
        membership, self._membership = self._membership, None
        sub, self._sub = self._sub, None
        try:
            if self._guard is not None:
                self._guard.close()
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            if sub is not None:
                reason = sub.close_reason or disconnect.CLIENT_GONE
                self._svc.metrics.disconnects.labels(reason=reason.reason).inc()
        finally:
            try:
                if membership is not None:
                    await membership.__aexit__(*exc_info)
            finally:
                self._closed()

    def _closed(self) -> None:
        self._svc.metrics.connections.labels(transport=self._transport).dec()
        self._svc.lifecycle.stream_closed()


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
