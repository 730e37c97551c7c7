"""Load-generator processes ("shards"), each holding a slice of the client connections.

One process cannot hold more descriptors than RLIMIT_NOFILE allows, so large runs are split
over several shards, all pinned to the load core. Each shard connects from its own loopback
source address (127.x.y.z), so ephemeral ports never run short. The parent drives a shard with
(command, argument) tuples over a Pipe; the shard answers each with one dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.procinfo import own_cpu_seconds, pin_self, raise_nofile
from bench.protocol import StreamClient, Transport, open_stream
from bench.recorder import ConnState, Recorder

# No connection confirmed for this long while some are pending: stop trying (the server is
# out of descriptors or Redis connections) and report how many got through.
STALL_SECONDS = 10.0
# A connection closed by the server before `connected` (a refusal) is tried this many more
# times, after 0.5-1.5 s.
REFUSAL_RETRIES = 3


@dataclass(frozen=True)
class ShardSpec:
    host: str
    port: int
    transport: Transport
    local_host: str
    users: list[str]  # one entry per connection: that connection's user id
    tokens: dict[str, str]
    concurrency: int = 200
    core: int = 1
    resume: bool = False  # reconnect and resume when a stream ends (bench.resume)


class Shard:
    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self.rec = Recorder()
        self.states: list[ConnState] = []
        self.clients: list[StreamClient] = []
        self.errors: Counter[str] = Counter()
        self.retried = 0  # refused attempts tried again (see REFUSAL_RETRIES)

    async def open_all(self) -> dict[str, Any]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(spec.concurrency)
        last_progress = time.monotonic()
        started = time.monotonic()

        async def one(user: str) -> None:
            nonlocal last_progress
            for attempt in range(1 + REFUSAL_RETRIES):
                state = ConnState(user, loop.create_future())
                async with gate:
                    try:
                        client = await open_stream(
                            spec.transport,
                            spec.host,
                            spec.port,
                            f"token={spec.tokens[user]}",
                            state,
                            self.rec,
                            local_host=spec.local_host,
                        )
                        break
                    except (OSError, TimeoutError) as exc:
                        kind = type(exc).__name__ + ": " + str(exc)[:60]
                refused = kind in ("ConnectionError: close frame", "ConnectionError: end of stream")
                if not refused or attempt == REFUSAL_RETRIES:
                    self.errors[kind] += 1
                    return
                # Turned away before `connected` (e.g. the gateway's `overloaded`, which
                # asks for a jittered delay): come back later, as a client would.
                self.retried += 1
                await asyncio.sleep(random.uniform(0.5, 1.5))
            self.states.append(state)
            self.clients.append(client)
            last_progress = time.monotonic()

        tasks = [asyncio.create_task(one(user)) for user in spec.users]
        while True:
            done = sum(task.done() for task in tasks)
            if done == len(tasks):
                break
            if time.monotonic() - last_progress > STALL_SECONDS:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.errors["stalled: no progress for 10 s"] += len(spec.users) - len(self.states)
                break
            await asyncio.sleep(0.1)
        return {
            "connected": len(self.states),
            "failed": len(spec.users) - len(self.states),
            "errors": dict(self.errors.most_common(5)),
            "retried": self.retried,
            "seconds": time.monotonic() - started,
        }

    def handle(self, command: str, arg: Any) -> dict[str, Any]:
        rec = self.rec
        if command == "reset":
            Recorder.forget(self.states)
            rec.reset(int(arg))
            rec.watch_seq = None
            return {"cpu": own_cpu_seconds()}
        if command == "collect":
            expected: dict[str, int] = arg
            open_states = [s for s in self.states if not s.closed]
            return {
                "latencies": rec.latencies.tobytes(),
                "received": rec.received,
                "lost": rec.lost(open_states, expected)
                + sum(expected.get(s.user, 0) for s in self.states if s.closed),
                "duplicates": rec.duplicates,
                "out_of_order": rec.out_of_order,
                "resyncs": rec.resyncs,
                "closed": len(self.states) - len(open_states),
                "cpu": own_cpu_seconds(),
            }
        if command == "watch":
            rec.watch_seq = int(arg)
            Recorder.forget(self.states)
            return {}
        if command == "progress":
            open_states = [s for s in self.states if not s.closed]
            return {
                "open": len(open_states),
                "reached": sum(1 for s in open_states if s.first_watch),
                "arrivals": [s.first_watch for s in open_states if s.first_watch],
                "resyncs": rec.resyncs,
                "closed": len(self.states) - len(open_states),
            }
        raise ValueError(command)

    def close(self) -> None:
        for client in self.clients:
            client.close()


async def _serve(pipe: Connection, spec: ShardSpec) -> None:
    loop = asyncio.get_running_loop()
    shard = Shard(spec)
    if spec.resume:
        from bench.resume import ResumeShard  # imports this module

        shard = ResumeShard(spec)
    pipe.send(await shard.open_all())
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "close":
            shard.close()
            await asyncio.sleep(0.2)
            pipe.send({})
            return
        pipe.send(shard.handle(command, arg))


def shard_main(pipe: Connection, spec: ShardSpec) -> None:
    pin_self(spec.core)
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(pipe, spec))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(pipe, spec))


class ShardHandle:
    """The parent's side of one shard process."""

    def __init__(self, spec: ShardSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=shard_main, args=(child, spec), daemon=True)
        self.process.start()
        self.size = len(spec.users)

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    async def reply(self, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.pipe.poll, timeout):
            raise TimeoutError("load-generator shard did not answer")
        result: dict[str, Any] = self.pipe.recv()
        return result

    async def ask(self, command: str, arg: Any = None, timeout: float = 60.0) -> dict[str, Any]:
        self.pipe.send((command, arg))
        return await self.reply(timeout)

    async def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(TimeoutError, EOFError, OSError):
                await self.ask("close", timeout=10)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
