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
from collections.abc import AsyncIterator, Callable
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
    """Per-connection timers: token expiry, the optional maximum lifetime, and the stall guard
    armed when the connection is closed. `close()` cancels them; call it once the farewell has
    been written."""

    def __init__(self, sub: Subscriber, principal: Principal, max_lifetime: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._sub = sub
        self._stall: asyncio.TimerHandle | None = None
        remaining = principal.expires_at - time.time()
        # Never later than `exp`; a little earlier at random so that tokens issued together
        # do not all reconnect in the same instant.
        delay = max(0.0, remaining - random.uniform(0, min(5.0, max(0.0, remaining) * 0.1)))
        self._expiry = loop.call_later(delay, sub.close, disconnect.TOKEN_EXPIRED)
        self._lifetime: asyncio.TimerHandle | None = None
        if max_lifetime > 0 and max_lifetime < delay:
            # Jittered down by up to 10 %: streams opened together do not end together.
            lifetime = max_lifetime * random.uniform(0.9, 1.0)
            self._lifetime = loop.call_later(lifetime, sub.close, disconnect.MAX_LIFETIME)
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
        if self._lifetime is not None:
            self._lifetime.cancel()
        if self._stall is not None:
            self._stall.cancel()
        self._sub.on_close = None


class HistorySource(Protocol):
    """Where a connection's missed events and its cursor come from (`history.HistoryReader`
    in production). Both raise `HistoryUnavailableError` when the history cannot be read."""

    async def since(self, user_id: str, last_id: str) -> Replay: ...

    async def cursor(self, user_id: str) -> str: ...


async def frames(
    sub: Subscriber,
    *,
    transport: Literal["ws", "sse"],
    heartbeat_interval: float,
    last_event_id: str | None,
    history: HistorySource,
    metrics: Metrics,
    on_connected: Callable[[], object] = lambda: None,
) -> AsyncIterator[list[Frame]]:
    """The messages of one connection, in order. Returns when the subscriber is closed.
    `on_connected()` runs once `connected` has been sent.

    From `connected` on, the client always holds a position (the cursor, then the id of each
    event): whatever it misses after that position (a reconnect, a pub/sub gap) is replayed
    from history, or it gets `resync` when the history cannot cover it.
    """
    if not await sub.wait_active():
        return
    position = _Position(sub.user_id, history, metrics)
    replay = await position.replay_since(last_event_id) if last_event_id else None
    if replay is not None:
        yield [connected_frame(sub.conn_id, transport, heartbeat_interval, last_event_id)]
        on_connected()
        if replay:
            yield replay
    else:
        cursor = await position.restart()
        yield [connected_frame(sub.conn_id, transport, heartbeat_interval, cursor)]
        on_connected()
        if last_event_id:
            metrics.resyncs.labels(reason="history_unavailable").inc()
            yield [resync_frame("history_unavailable", cursor)]
    while True:
        batch = await sub.get()
        if sub.close_reason is not None:
            return
        gap = sub.take_gap()
        if gap is not None:
            # The pub/sub subscription was lost and is back: fill the gap first.
            batch = [*await position.backfill(legacy=gap == "legacy"), *position.live(batch)]
        else:
            batch = position.live(batch)
        if batch:
            yield batch


class _Position:
    """What one connection's client holds: the id of the last event (or cursor) it was sent,
    and the de-duplication watermark between history reads and live frames."""

    __slots__ = ("_history", "_metrics", "_user_id", "last", "watermark")

    def __init__(self, user_id: str, history: HistorySource, metrics: Metrics) -> None:
        self._user_id = user_id
        self._history = history
        self._metrics = metrics
        self.last: tuple[int, int] | None = None
        self.watermark: tuple[int, int] | None = None

    async def replay_since(self, last_id: str) -> list[Frame] | None:
        """The events after `last_id`, or None when the history cannot cover them."""
        try:
            replay = await self._history.since(self._user_id, last_id)
        except HistoryUnavailableError as exc:
            logger.warning("history unavailable for resume: %s", exc)
            self._metrics.redis_errors.labels(operation="history").inc()
            return None
        if replay.gap is not None:
            return None
        self.last = parse_stream_id(last_id)
        self._replayed(replay.frames)
        return replay.frames

    async def restart(self) -> str | None:
        """A fresh cursor: the position of the history now. Live frames up to it are covered
        by the hydration that follows `connected` or `resync`."""
        try:
            cursor = await self._history.cursor(self._user_id)
        except HistoryUnavailableError as exc:
            logger.warning("history unavailable for a cursor: %s", exc)
            self._metrics.redis_errors.labels(operation="history").inc()
            self.last = self.watermark = None
            return None
        self.last = self.watermark = parse_stream_id(cursor)
        return cursor

    async def backfill(self, *, legacy: bool) -> list[Frame]:
        """After a pub/sub gap: the events missed since the last one sent, else `resync`:
        when there is no position, or events without ids may have been missed (`legacy`: the
        channel carries them), as history holds only the publishers' events."""
        if self.last is not None and not legacy:
            ms, seq = self.last
            frames = await self.replay_since(f"{ms}-{seq}")
            if frames is not None:
                return frames
        cursor = await self.restart()
        self._metrics.resyncs.labels(reason="redis_reconnected").inc()
        return [resync_frame("redis_reconnected", cursor)]

    def live(self, batch: list[Frame]) -> list[Frame]:
        """Live frames not already sent from history, noting the position they move to."""
        watermark = self.watermark
        if watermark is not None:
            batch = [f for f in batch if f.event_id is None or f.event_id > watermark]
        for frame in batch:
            if frame.event_id is not None:
                self.last = frame.event_id
                self.watermark = None  # ids only grow: nothing older can follow
        return batch

    def _replayed(self, frames: list[Frame]) -> None:
        if frames:
            self._metrics.replayed.inc(len(frames))
            self.last = frames[-1].event_id
        self.watermark = self.last
