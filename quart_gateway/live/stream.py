"""What every live stream does, whatever its transport.

    register with the multiplexer ─> wait until Redis confirms ─> `connected`
        ─> replay history after Last-Event-ID (or `resync`) ─> live frames, de-duplicated
        ─> ends when the subscriber is closed: client gone, slow, token expiry, shutdown

`frames()` yields lists of ready-to-send frames; the WebSocket and SSE handlers only write
them out. Timers (token expiry, stall guard) close the subscriber; they never touch the socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Literal, Protocol

from events.channels import parse_stream_id
from quart_gateway.admission.auth import Principal
from quart_gateway.live import disconnect
from quart_gateway.live.history import HistoryUnavailableError, Replay
from quart_gateway.live.messages import connected_frame, resync_frame
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import Frame
from quart_gateway.ops.metrics import Metrics

logger = logging.getLogger(__name__)

# A connection must be gone this long after it was closed (farewell sent, handler returned).
# If it is not, its client stopped reading and the write is stuck: the handler is cancelled,
# as only that frees the connection.
STALL_GRACE_SECONDS = 2.0


class StreamGuard:
    """Per-connection timers: token expiry, and the stall guard armed when the connection is
    closed. `close()` cancels both; call it once the farewell has been written."""

    def __init__(self, sub: Subscriber, principal: Principal) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._sub = sub
        self._stall: asyncio.TimerHandle | None = None
        remaining = principal.expires_at - time.time()
        # Never later than `exp`; a little earlier at random so that tokens issued together
        # do not all reconnect in the same instant.
        delay = max(0.0, remaining - random.uniform(0, min(5.0, max(0.0, remaining) * 0.1)))
        self._expiry = loop.call_later(delay, sub.close, disconnect.TOKEN_EXPIRED)
        sub.on_close = self._closed

    def _closed(self) -> None:
        if self._stall is None:
            self._stall = asyncio.get_running_loop().call_later(
                STALL_GRACE_SECONDS, self._cancel_if_stuck
            )

    def _cancel_if_stuck(self) -> None:
        if self._task is not None and not self._task.done():
            logger.info("cancelling a connection stuck writing to its client")
            self._task.cancel()

    def close(self) -> None:
        self._expiry.cancel()
        if self._stall is not None:
            self._stall.cancel()
        self._sub.on_close = None


class HistorySource(Protocol):
    """Where a resuming connection's missed events come from (`history.HistoryReader` in
    production). Raises `HistoryUnavailableError` when it cannot be read."""

    async def since(self, user_id: str, last_id: str) -> Replay: ...


async def frames(
    sub: Subscriber,
    *,
    transport: Literal["ws", "sse"],
    heartbeat_interval: float,
    last_event_id: str | None,
    history: HistorySource,
    metrics: Metrics,
) -> AsyncIterator[list[Frame]]:
    """The messages of one connection, in order. Returns when the subscriber is closed."""
    if not await sub.wait_active():
        return
    yield [connected_frame(sub.conn_id, transport, heartbeat_interval)]
    watermark: tuple[int, int] | None = None
    if last_event_id:
        replay: Replay | None
        try:
            replay = await history.since(sub.user_id, last_event_id)
        except HistoryUnavailableError as exc:
            logger.warning("history unavailable for resume: %s", exc)
            metrics.redis_errors.labels(operation="history").inc()
            replay = None
        if replay is None or replay.gap is not None:
            metrics.resyncs.labels(reason="history_unavailable").inc()
            yield [resync_frame("history_unavailable")]
        else:
            watermark = parse_stream_id(last_event_id)
            if replay.frames:
                metrics.replayed.inc(len(replay.frames))
                watermark = replay.frames[-1].event_id
                yield replay.frames
    while True:
        batch = await sub.get()
        if not batch:
            return
        if watermark is not None:
            # Live frames that the replay already covered: same ids, drop them.
            batch = [f for f in batch if f.event_id is None or f.event_id > watermark]
            if any(f.event_id is not None for f in batch):
                watermark = None  # ids only grow: nothing older can follow
            if not batch:
                continue
        yield batch
