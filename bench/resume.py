"""Clients that stay: they reconnect when a stream ends and resume where they left off.

Used by the restart scenario. Each connection keeps the id of the last event it received (or
the `cursor` of `connected`/`resync`, which stands for "everything up to here") and resumes
with it: SSE sends `Last-Event-ID`, WebSocket `?last_event_id=`. Before reconnecting it waits
the delay the server asked for (`retry_ms` of `disconnect`; on SSE the last `retry:`), or its
own when there is none. A failed attempt (connection refused, 5xx, timeout) backs off.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from typing import Any
from urllib.parse import quote

from bench.protocol import StreamClient, open_stream
from bench.recorder import ConnState, Recorder, number_after, string_after
from bench.shard import Shard

# Client policy where the server gives no delay: a jittered 0.5-3 s after a stream ends (what
# a browser's EventSource or a typical WebSocket client with jitter does), and after a failed
# attempt an exponential back-off from 0.25 s, capped at 4 s, with jitter.
DEFAULT_RETRY = (0.5, 3.0)
BACKOFF_BASE, BACKOFF_CAP = 0.25, 4.0


def _default_delay() -> float:
    return random.uniform(*DEFAULT_RETRY)


def _backoff(failures: int) -> float:
    ceiling: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, failures - 1))
    return ceiling * random.uniform(0.5, 1.0)


class ResumeState(ConnState):
    __slots__ = ("back_at", "connected_at", "ended")

    def __init__(self, user: str, connected: asyncio.Future[None]) -> None:
        super().__init__(user, connected)
        self.connected_at = 0.0  # receive time of the latest `connected`
        self.back_at = 0.0  # first `connected` at or after the mark (the SIGTERM)
        self.ended: str | None = None  # reason of the latest `disconnect` message


class ResumeRecorder(Recorder):
    """Keeps ids, cursors and reconnect hints; records every delivery with its arrival time
    and whether it was replayed (sent before the stream that delivered it was connected)."""

    def __init__(self) -> None:
        super().__init__()
        self.keep_ids = True
        self.mark = 0.0
        self.arrivals = array("d")
        self.replayed = array("b")
        self.events: Counter[str] = Counter()  # system messages by kind, disconnects by reason

    def reset(self, seq_lo: int) -> None:
        super().reset(seq_lo)
        self.arrivals = array("d")
        self.replayed = array("b")
        self.events.clear()

    def on_message(self, conn: ConnState, payload: bytes) -> None:
        assert isinstance(conn, ResumeState)
        raw_seq = number_after(payload, b'"seq":')
        if raw_seq is None:
            self._system(conn, payload)
            return
        now = time.time()
        seq = int(raw_seq)
        event_id = string_after(payload, b'"id":"')
        if event_id is not None:
            conn.last_id = event_id
        if seq < self.seq_lo:
            return
        raw_sent = number_after(payload, b'"sent":')
        sent = float(raw_sent) if raw_sent is not None else now
        if seq <= conn.last_seq:
            if seq in conn.seen:
                self.duplicates += 1
                return
            self.out_of_order += 1
        else:
            conn.last_seq = seq
        conn.seen.add(seq)
        self.received += 1
        self.latencies.append((now - sent) * 1000.0)
        self.arrivals.append(now)
        self.replayed.append(1 if sent < conn.connected_at else 0)

    def _system(self, conn: ResumeState, payload: bytes) -> None:
        cursor = string_after(payload, b'"cursor":"')
        if b'"connected"' in payload:
            now = time.time()
            conn.connected_at = now
            if self.mark and not conn.back_at and now >= self.mark:
                conn.back_at = now
            if cursor is not None:
                conn.last_id = cursor
            if not conn.connected.done():
                conn.connected.set_result(None)
        elif b'"resync"' in payload:
            self.resyncs += 1
            if cursor is not None:
                conn.last_id = cursor
        elif b'"disconnect"' in payload:
            conn.ended = string_after(payload, b'"reason":"') or "?"
            retry = number_after(payload, b'"retry_ms":')
            if retry is not None:
                conn.retry_ms = int(retry)
            self.events["disconnect " + conn.ended] += 1
        else:
            self.other += 1


class ResumeShard(Shard):
    """A shard whose connections reconnect and resume until the shard is closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rec: ResumeRecorder = ResumeRecorder()
        self.live: dict[int, StreamClient] = {}
        self.resuming: list[ResumeState] = []  # the same objects as `states`, typed
        self.attempts = 0
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    async def open_all(self) -> dict[str, Any]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(spec.concurrency)
        started = time.monotonic()
        for i, user in enumerate(spec.users):
            state = ResumeState(user, loop.create_future())
            self.states.append(state)
            self.resuming.append(state)
            self._tasks.append(asyncio.create_task(self._keep(i, state, gate)))
        last, last_change = -1, time.monotonic()
        while True:
            count = sum(1 for s in self.resuming if s.connected_at)
            if count == len(self.states):
                break
            if count != last:
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > 10:
                self.errors["stalled: no progress for 10 s"] += len(self.states) - count
                break
            await asyncio.sleep(0.1)
        return {
            "connected": sum(1 for s in self.resuming if s.connected_at),
            "errors": dict(self.errors.most_common(8)),
            "seconds": time.monotonic() - started,
        }

    async def _keep(self, index: int, state: ResumeState, gate: asyncio.Semaphore | None) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        token = spec.tokens[state.user]
        failures = 0
        while not self.stopping:
            state.connected = loop.create_future()
            state.gone = loop.create_future()
            state.closed = False
            state.status = None
            state.close_code = None
            state.ended = None
            query = f"token={token}"
            headers: tuple[str, ...] = ()
            if state.last_id is not None:
                if spec.transport == "ws":
                    query += "&last_event_id=" + quote(state.last_id, safe="")
                else:
                    headers = (f"Last-Event-ID: {state.last_id}",)
            hint = state.retry_ms
            state.retry_ms = None if spec.transport == "ws" else hint  # SSE: `retry:` persists
            self.attempts += 1
            try:
                if gate is not None:
                    async with gate:
                        client = await self._open(state, query, headers)
                else:
                    client = await self._open(state, query, headers)
            except (OSError, TimeoutError) as exc:
                failures += 1
                kind = self._failure(state, exc)
                self.errors[kind] += 1
                delay = _backoff(failures)
                if state.ended is not None and state.retry_ms is not None:
                    delay = state.retry_ms / 1000  # refused with a delay: honour it
                await asyncio.sleep(delay)
                continue
            gate = None  # only the first connection of each client queues behind the gate
            failures = 0
            self.live[index] = client
            why = await state.gone
            self.live.pop(index, None)
            if self.stopping:
                return
            self.errors["ended: " + (state.ended or why)] += 1
            delay = state.retry_ms / 1000 if state.retry_ms is not None else _default_delay()
            await asyncio.sleep(delay)

    async def _open(self, state: ResumeState, query: str, headers: tuple[str, ...]) -> StreamClient:
        spec = self.spec
        return await open_stream(
            spec.transport,
            spec.host,
            spec.port,
            query,
            state,
            self.rec,
            local_host=spec.local_host,
            headers=headers,
        )

    @staticmethod
    def _failure(state: ResumeState, exc: BaseException) -> str:
        if state.ended is not None:
            return "refused: " + state.ended
        if state.status is not None:
            code = state.status.split(" ")[1] if " " in state.status else state.status
            return ("5xx " if code.startswith("5") else "status ") + code
        if isinstance(exc, ConnectionRefusedError):
            return "connect refused"
        if isinstance(exc, TimeoutError):
            return "timeout"
        return "failed: " + str(exc)[:40]

    def handle(self, command: str, arg: Any) -> dict[str, Any]:
        rec = self.rec
        if command == "reset":
            Recorder.forget(self.states)
            rec.reset(int(arg))
            self.errors.clear()
            self.attempts = 0
            return {}
        if command == "mark":
            rec.mark = float(arg)
            return {}
        if command == "progress":
            return {"back": sum(1 for s in self.resuming if s.back_at)}
        if command == "collect":
            expected: dict[str, int] = arg
            return {
                "latencies": rec.latencies.tobytes(),
                "arrivals": rec.arrivals.tobytes(),
                "replayed": rec.replayed.tobytes(),
                "received": rec.received,
                "lost": rec.lost(self.states, expected),
                "duplicates": rec.duplicates,
                "out_of_order": rec.out_of_order,
                "resyncs": rec.resyncs,
                "back_at": [s.back_at for s in self.resuming],
                "live_at_end": len(self.live),
                "attempts": self.attempts,
                "errors": dict(self.errors),
                "events": dict(rec.events),
            }
        raise ValueError(command)

    def close(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for client in list(self.live.values()):
            client.close()
