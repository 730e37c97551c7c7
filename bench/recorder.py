"""Per-connection delivery bookkeeping: latency, loss, duplicates and order.

Payloads carry `"sent":<unix time>` and `"seq":<n>` (a run-wide sequence number). They are read
with byte searches instead of a JSON parse, so the load generator stays cheap per message.
"""

from __future__ import annotations

import asyncio
import time
from array import array


def number_after(payload: bytes, key: bytes) -> bytes | None:
    """The raw JSON number that follows `key` (e.g. b'"seq":'), or None."""
    start = payload.find(key)
    if start < 0:
        return None
    start += len(key)
    size = len(payload)
    while start < size and payload[start] == 0x20:
        start += 1
    end = start
    while end < size and payload[end] not in b",} ":
        end += 1
    return payload[start:end]


def string_after(payload: bytes, key: bytes) -> str | None:
    """The JSON string value that follows `key` (e.g. b'"id":"'), or None."""
    start = payload.find(key)
    if start < 0:
        return None
    start += len(key)
    end = payload.find(b'"', start)
    return payload[start:end].decode() if end > 0 else None


class ConnState:
    """What one connection has seen since the last `Recorder.reset()`."""

    __slots__ = (
        "close_code",
        "closed",
        "connected",
        "first_watch",
        "gone",
        "last_id",
        "last_seq",
        "retry_ms",
        "seen",
        "status",
        "user",
    )

    def __init__(self, user: str, connected: asyncio.Future[None]) -> None:
        self.user = user
        self.connected = connected
        self.closed = False
        self.last_seq = -1
        self.seen: set[int] = set()
        self.first_watch = 0.0  # receive time of the first seq >= Recorder.watch_seq
        self.last_id: str | None = None
        # Set by the protocol client: how the connection ended, and a reconnect delay the
        # server asked for (SSE `retry:`); `gone` resolves when the connection ends.
        self.retry_ms: int | None = None
        self.close_code: int | None = None
        self.status: str | None = None
        self.gone: asyncio.Future[str] | None = None


class Recorder:
    """Shared by every connection of one generator process."""

    def __init__(self) -> None:
        self.latencies = array("d")
        self.seq_lo = 0
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.resyncs = 0
        self.other = 0
        self.watch_seq: int | None = None
        self.keep_ids = False
        self._target: tuple[int, asyncio.Future[float]] | None = None

    def reset(self, seq_lo: int) -> None:
        self.latencies = array("d")
        self.seq_lo = seq_lo
        self.received = self.duplicates = self.out_of_order = self.resyncs = self.other = 0

    def when_received(self, count: int) -> asyncio.Future[float]:
        """A future set to the receive time of the `count`-th recorded event."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._target = (count, future)
        return future

    def on_message(self, conn: ConnState, payload: bytes) -> None:
        raw_seq = number_after(payload, b'"seq":')
        if raw_seq is None:
            if b'"connected"' in payload:
                if not conn.connected.done():
                    conn.connected.set_result(None)
            elif b'"resync"' in payload:
                self.resyncs += 1
            else:
                self.other += 1
            return
        now = time.time()
        seq = int(raw_seq)
        if self.keep_ids:
            conn.last_id = string_after(payload, b'"id":"')
        if self.watch_seq is not None and seq >= self.watch_seq and not conn.first_watch:
            conn.first_watch = now
        if seq < self.seq_lo:
            return  # a straggler from an earlier step
        raw_sent = number_after(payload, b'"sent":')
        if raw_sent is not None:
            self.latencies.append((now - float(raw_sent)) * 1000.0)
        if seq <= conn.last_seq:
            if seq in conn.seen:
                self.duplicates += 1
                return
            self.out_of_order += 1
        else:
            conn.last_seq = seq
        conn.seen.add(seq)
        self.received += 1
        target = self._target
        if target is not None and self.received >= target[0]:
            self._target = None
            if not target[1].done():
                target[1].set_result(now)

    def lost(self, conns: list[ConnState], expected: dict[str, int]) -> int:
        """Events published to a connection's user in this step that it never received."""
        lost = 0
        for conn in conns:
            want = expected.get(conn.user, 0)
            got = sum(1 for seq in conn.seen if seq >= self.seq_lo)
            lost += max(0, want - got)
        return lost

    @staticmethod
    def forget(conns: list[ConnState]) -> None:
        for conn in conns:
            conn.seen.clear()
            conn.first_watch = 0.0
