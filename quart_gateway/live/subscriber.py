"""Per-connection bounded buffer between the multiplexer and one client.

The multiplexer calls `offer()` (sync, never blocks); the connection's pump awaits `get()`,
which hands over everything queued at once so a connection that fell behind catches up in one
write. The buffer is bounded by event count and by bytes; overflowing it ends the connection
with SLOW_CONSUMER instead of growing memory or slowing anyone else.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from quart_gateway.live import disconnect
from quart_gateway.live.disconnect import Ending
from quart_gateway.live.wire import Frame

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    queued_events: int
    queued_bytes: int
    delivered: int


class Subscriber:
    __slots__ = (
        "_bytes",
        "_gap",
        "_loop",
        "_queue",
        "_waiter",
        "active",
        "close_reason",
        "conn_id",
        "delivered",
        "max_bytes",
        "max_events",
        "on_close",
        "overflow_depth",
        "seq",
        "user_id",
    )

    def __init__(self, user_id: str, *, max_events: int, max_bytes: int) -> None:
        self.user_id = user_id
        self.seq = next(_ids)  # spreads periodic work (heartbeats) over connections
        self.conn_id = f"{self.seq:x}"
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.close_reason: Ending | None = None
        self.delivered = 0
        # A list, not a deque: get() hands over everything at once, so frames are only ever
        # appended, and an empty list costs 56 bytes where a deque costs 600.
        self._queue: list[Frame] = []
        self._bytes = 0
        self._gap: Literal["ids", "legacy"] | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Cached: on Python 3.11 every get_running_loop() is a getpid() system call, and a
        # connection waits once per delivery.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.overflow_depth: tuple[int, int] = (0, 0)  # (events, bytes) queued at overflow
        self.active = False  # Redis has confirmed the subscription feeding this connection
        self.on_close: Callable[[], object] | None = None

    def offer(self, frame: Frame) -> bool:
        """Queue a frame; False if the connection is closing or just overflowed."""
        if self.close_reason is not None:
            return False
        queue = self._queue
        # One frame larger than the byte budget still goes through an empty queue: the limit
        # is on falling behind, not on the size of an event.
        if len(queue) >= self.max_events or (queue and self._bytes + frame.size > self.max_bytes):
            self.overflow_depth = (len(self._queue), self._bytes)
            self.close(disconnect.SLOW_CONSUMER)
            return False
        self._queue.append(frame)
        self._bytes += frame.size
        self._wake()
        return True

    def close(self, reason: Ending) -> None:
        """Ask the connection to end; the first reason wins. Queued frames are discarded."""
        if self.close_reason is None:
            self.close_reason = reason
            self._queue.clear()
            self._bytes = 0
            self._wake()
            if self.on_close is not None:
                self.on_close()

    def activate(self) -> None:
        """Called by the multiplexer once Redis has confirmed the subscription."""
        if not self.active:
            self.active = True
            self._wake()

    async def wait_active(self) -> bool:
        """Wait for `activate()`; False if the connection must end first."""
        while not self.active and self.close_reason is None:
            await self._wait()
        return self.close_reason is None

    def mark_gap(self, *, legacy: bool = False) -> None:
        """Called by the multiplexer when the subscription feeding this connection was lost and
        is back: events published meanwhile did not arrive live. `legacy`: the channel has
        carried events without ids, which history cannot replay. `get()` returns at once."""
        self._gap = "legacy" if legacy or self._gap == "legacy" else "ids"
        self._wake()

    def take_gap(self) -> Literal["ids", "legacy"] | None:
        """The gap marked since the last call, if any (and clear it)."""
        gap, self._gap = self._gap, None
        return gap

    async def get(self) -> list[Frame]:
        """Everything queued, waiting for at least one frame or a gap (then possibly []);
        [] once the connection must end."""
        while not self._queue and self.close_reason is None and self._gap is None:
            await self._wait()
        if self.close_reason is not None:
            return []
        frames, self._queue = self._queue, []
        self._bytes = 0
        self.delivered += len(frames)
        return frames

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(len(self._queue), self._bytes, self.delivered)

    async def _wait(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
