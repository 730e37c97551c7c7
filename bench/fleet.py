"""A set of shards holding N connections for U users (k per user), driven together."""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import jwt

from bench.protocol import Transport
from bench.servers import JWT_SECRET
from bench.shard import ShardHandle, ShardSpec

MAX_PER_SHARD = 5000
_source_ids = itertools.count(1)


def next_source_address() -> str:
    """A loopback source address not used before in this run: 127.1.0.1, 127.1.0.2, ..."""
    n = next(_source_ids)
    return f"127.1.{(n // 254) % 256}.{n % 254 + 1}"


def make_token(user: str, ttl: float = 6 * 3600) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + ttl)}, JWT_SECRET, "HS256")


def layout(connections: int, users: int, prefix: str) -> list[str]:
    """The user of each connection, users interleaved so every shard holds all of them."""
    names = [f"{prefix}-{i}" for i in range(users)]
    return [names[i % users] for i in range(connections)]


@dataclass
class OpenResult:
    wanted: int
    connected: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # attempts refused before `connected` and tried again


class Fleet:
    def __init__(self, shards: list[ShardHandle], users: list[str]) -> None:
        self.shards = shards
        self.conn_users = users
        self.users = sorted(set(users))

    @classmethod
    async def open(
        cls,
        port: int,
        transport: Transport,
        conn_users: list[str],
        *,
        concurrency: int = 200,
        resume: bool = False,
    ) -> tuple[Fleet, OpenResult]:
        tokens = {user: make_token(user) for user in set(conn_users)}
        count = max(1, -(-len(conn_users) // MAX_PER_SHARD))
        shards = []
        for i in range(count):
            part = conn_users[i::count]
            spec = ShardSpec(
                host="127.0.0.1",
                port=port,
                transport=transport,
                local_host=next_source_address(),
                users=part,
                tokens={user: tokens[user] for user in set(part)},
                concurrency=max(20, concurrency // count),
                resume=resume,
            )
            shards.append(ShardHandle(spec))
        started = time.monotonic()
        timeout = 60 + len(conn_users) * 0.01
        replies = await asyncio.gather(*(shard.reply(timeout) for shard in shards))
        errors: dict[str, int] = {}
        for reply in replies:
            for key, value in reply["errors"].items():
                errors[key] = errors.get(key, 0) + value
        result = OpenResult(
            wanted=len(conn_users),
            connected=sum(r["connected"] for r in replies),
            seconds=time.monotonic() - started,
            errors=errors,
            retried=sum(r.get("retried", 0) for r in replies),
        )
        return cls(shards, conn_users), result

    async def ask_all(self, command: str, arg: Any = None) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(shard.ask(command, arg) for shard in self.shards)))

    async def collect(self, expected: dict[str, int]) -> dict[str, Any]:
        replies = await self.ask_all("collect", expected)
        latencies = array("d")
        for reply in replies:
            part = array("d")
            part.frombytes(reply["latencies"])
            latencies.extend(part)
        total = {
            key: sum(r[key] for r in replies)
            for key in ("received", "lost", "duplicates", "out_of_order", "resyncs", "closed")
        }
        return {"latencies": latencies, "cpu": sum(r["cpu"] for r in replies), **total}

    async def reset(self, seq_lo: int) -> float:
        """Start a new step at `seq_lo`; return the shards' CPU seconds so far."""
        replies = await self.ask_all("reset", seq_lo)
        return float(sum(r["cpu"] for r in replies))

    async def close(self) -> None:
        await asyncio.gather(*(shard.close() for shard in self.shards))
