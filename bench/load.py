"""Publishing at a fixed rate: bare PUBLISH (pipelined per tick) or `EventPublisher.publish`.

Every payload is a registered event with a run-wide sequence number and its send time:
`{"event":"class_updated","class_id":"<seq>","class_designation":"x","sent":<t>,"seq":<n>}`
(~105 bytes), or with `--payload batch_phase_concluded` a ~220-byte `batch_phase_concluded`
with a UUID batch id and an ISO timestamp.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Literal

import redis.asyncio as aioredis

from bench.servers import BENCH_CLIENT_NAME
from events.channels import user_channel
from publishers import EventPublisher

Mode = Literal["publish", "publisher"]
TICK_SECONDS = 0.005
# The replay scenario needs the last event a client saw plus 1,000 missed ones in history;
# EventPublisher's default cap (1,000) would have trimmed the former (see docs/performance.md).
HISTORY_MAX_EVENTS = 2000
PUBLISHER_CONCURRENCY = 16  # concurrent EventPublisher.publish calls (and pool connections)


Payload = Literal["class_updated", "batch_phase_concluded"]
# A batch id as the orchestrator writes it (a UUID); fixed, so every payload has the same size.
_BATCH_ID = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def payload_dict(seq: int, kind: Payload = "class_updated") -> dict[str, object]:
    if kind == "batch_phase_concluded":
        # ~220 bytes on the wire, the size of a typical domain event with its timestamp.
        return {
            "event": "batch_phase_concluded",
            "batch_id": _BATCH_ID,
            "phase": "spellcheck",
            "status": "completed_successfully",
            "timestamp": datetime.now(UTC).isoformat(),
            "sent": time.time(),
            "seq": seq,
        }
    return {
        "event": "class_updated",
        "class_id": str(seq),
        "class_designation": "x",
        "sent": time.time(),
        "seq": seq,
    }


def payload_text(seq: int, kind: Payload = "class_updated") -> str:
    if kind == "batch_phase_concluded":
        return (
            f'{{"event":"batch_phase_concluded","batch_id":"{_BATCH_ID}","phase":"spellcheck",'
            f'"status":"completed_successfully","timestamp":"{datetime.now(UTC).isoformat()}",'
            f'"sent":{time.time():.6f},"seq":{seq}}}'
        )
    return (
        f'{{"event":"class_updated","class_id":"{seq}","class_designation":"x",'
        f'"sent":{time.time():.6f},"seq":{seq}}}'
    )


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class RawPublisher:
    """Bare PUBLISH written as RESP on one socket: a few microseconds per event, so the
    generator can offer rates that redis-py's per-command overhead could not."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.replies = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(b"*3\r\n" + _bulk(b"CLIENT") + _bulk(b"SETNAME") + _bulk(b"bench"))
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self.replies += chunk.count(b"\n")

    async def publish(self, items: list[tuple[bytes, bytes]]) -> None:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        head = b"*3\r\n$7\r\nPUBLISH\r\n"
        self._writer.write(b"".join(head + _bulk(ch) + _bulk(data) for ch, data in items))
        await self._writer.drain()

    async def aclose(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._reader_task = None


class Loader:
    """Owns the benchmark's Redis clients and the run-wide sequence counter."""

    def __init__(self, redis_url: str, payload: Payload = "class_updated") -> None:
        self.url = redis_url
        self.payload: Payload = payload
        self._last_seq = 0
        self._inflight = asyncio.Semaphore(PUBLISHER_CONCURRENCY)
        host, port = redis_url.split("://", 1)[1].split("/", 1)[0].split(":")
        self.raw = RawPublisher(host, int(port))
        self.client = aioredis.Redis.from_url(redis_url, client_name=BENCH_CLIENT_NAME)
        self._publisher_client = aioredis.Redis.from_url(
            redis_url, client_name=BENCH_CLIENT_NAME, max_connections=PUBLISHER_CONCURRENCY
        )
        self.publisher = EventPublisher(
            self._publisher_client, history_max_events=HISTORY_MAX_EVENTS, timeout=5.0
        )

    def take(self) -> int:
        self._last_seq += 1
        return self._last_seq

    def peek(self) -> int:
        """The next sequence number, without consuming it."""
        return self._last_seq + 1

    async def publish_one(self, mode: Mode, user: str) -> tuple[int, str | None]:
        seq = self.take()
        if mode == "publisher":
            return seq, await self.publisher.publish(user, payload_dict(seq, self.payload))
        await self.client.publish(user_channel(user), payload_text(seq, self.payload))
        return seq, None

    async def run(
        self, mode: Mode, users: list[str], rate: float, seconds: float
    ) -> tuple[Counter[str], int]:
        """Publish round-robin over `users` at `rate`/s for `seconds`.

        Returns the count per user and the number actually sent (fewer than offered if the
        publisher itself fell behind: then the step reports the lower achieved rate).
        """
        per_user: Counter[str] = Counter()
        order = itertools.cycle(users)
        started = time.monotonic()
        sent = 0
        total = int(rate * seconds)
        tick = 0
        while sent < total:
            due = min(total, int(rate * (time.monotonic() - started)) + 1) - sent
            if due > 0:
                batch = [next(order) for _ in range(due)]
                await self._send(mode, batch)
                per_user.update(batch)
                sent += due
            # Sleep to the next tick boundary: one batch per tick, never a busy loop.
            tick = max(tick + 1, int((time.monotonic() - started) / TICK_SECONDS) + 1)
            await asyncio.sleep(max(0.0, started + tick * TICK_SECONDS - time.monotonic()))
        return per_user, sent

    async def _send(self, mode: Mode, batch: list[str]) -> None:
        if mode == "publisher":
            await asyncio.gather(*(self._publish_limited(user) for user in batch))
            return
        await self.raw.publish(
            [
                (user_channel(u).encode(), payload_text(self.take(), self.payload).encode())
                for u in batch
            ]
        )

    async def _publish_limited(self, user: str) -> None:
        async with self._inflight:
            await self.publisher.publish(user, payload_dict(self.take(), self.payload))

    async def probe(self, users: list[str]) -> None:
        """One bare PUBLISH per user on a fresh connection (used while Redis restarts)."""
        client = aioredis.Redis.from_url(
            self.url, client_name=BENCH_CLIENT_NAME, socket_connect_timeout=0.5, socket_timeout=1
        )
        try:
            async with client.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.publish(user_channel(user), payload_text(self.take(), self.payload))
                await pipe.execute()
        finally:
            await client.aclose()

    async def reconnect(self) -> None:
        """New clients (after Redis was restarted); the sequence counter carries on."""
        await self.aclose()
        self.client = aioredis.Redis.from_url(self.url, client_name=BENCH_CLIENT_NAME)
        self._publisher_client = aioredis.Redis.from_url(
            self.url, client_name=BENCH_CLIENT_NAME, max_connections=PUBLISHER_CONCURRENCY
        )
        self.publisher = EventPublisher(
            self._publisher_client, history_max_events=HISTORY_MAX_EVENTS, timeout=5.0
        )

    async def aclose(self) -> None:
        await self.raw.aclose()
        await self.client.aclose()
        await self._publisher_client.aclose()
