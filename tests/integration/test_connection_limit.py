"""ConnectionLimiter against a real Redis: leases up to the limit, given back, renewed while
held, lapsing when not, and fail open when Redis cannot be reached.

The lease TTL is shortened so that renewal and lapsing happen within a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from quart_gateway.admission import connection_limit
from quart_gateway.admission.connection_limit import ConnectionLimiter
from quart_gateway.aio.supervisor import TaskSupervisor
from quart_gateway.ops.metrics import Metrics
from tests.support import unreachable_redis, wait_until

TTL_MS = 600  # renewed every 200 ms


@asynccontextmanager
async def limiting(
    client: aioredis.Redis, limit: int, metrics: Metrics | None = None
) -> AsyncIterator[ConnectionLimiter]:
    """A started limiter, stopped as the worker's lifespan stops it."""
    limiter = ConnectionLimiter(client, limit, metrics or Metrics())
    tasks = TaskSupervisor()
    limiter.start(tasks)
    try:
        yield limiter
    finally:
        await tasks.stop()
        await limiter.stop()


@pytest.fixture(autouse=True)
def _short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_limit, "LEASE_TTL_MS", TTL_MS)


def leases_of(user_id: str) -> str:
    return f"conn-leases:{user_id}"


async def test_leases_are_granted_up_to_the_limit(redis: aioredis.Redis, user_id: str) -> None:
    async with limiting(redis, 2) as limiter:
        granted = await asyncio.gather(*(limiter.acquire(user_id, f"c{n}") for n in range(3)))
        assert sorted(granted) == [False, True, True]
        assert await redis.zcard(leases_of(user_id)) == 2
        assert await limiter.acquire(
            f"{user_id}-other", "c0"
        )  # every user has a limit of their own


async def test_a_released_lease_frees_its_slot(redis: aioredis.Redis, user_id: str) -> None:
    async with limiting(redis, 1) as limiter:
        assert await limiter.acquire(user_id, "first")
        limiter.hold(user_id, "first")
        assert not await limiter.acquire(user_id, "second")
        limiter.release(user_id, "first")
        assert await limiter.acquire(user_id, "second")  # queued after the release
        assert await redis.zrange(leases_of(user_id), 0, -1) == [b"second"]


async def test_a_held_lease_is_renewed_and_one_not_held_lapses(
    redis: aioredis.Redis, user_id: str
) -> None:
    async with limiting(redis, 2) as limiter:
        assert await limiter.acquire(user_id, "held")
        limiter.hold(user_id, "held")
        assert await limiter.acquire(user_id, "left")  # the client went before its stream began
        expiry = await redis.zscore(leases_of(user_id), "held")
        assert expiry is not None

        async def renewed() -> bool:
            score = await redis.zscore(leases_of(user_id), "held")
            return score is not None and score > expiry

        await wait_until(renewed, timeout=2)
        # Once "left" lapses, a new stream takes its slot; "held", as old, still counts.
        await wait_until(lambda: limiter.acquire(user_id, "new"), timeout=5)
        assert not await limiter.acquire(user_id, "one too many")
        members = await redis.zrange(leases_of(user_id), 0, -1)
        assert sorted(members) == [b"held", b"new"]


async def test_stop_gives_back_what_is_still_queued(redis: aioredis.Redis, user_id: str) -> None:
    limiter = ConnectionLimiter(redis, 1, Metrics())
    tasks = TaskSupervisor()
    limiter.start(tasks)
    assert await limiter.acquire(user_id, "c")
    limiter.hold(user_id, "c")
    await tasks.stop()  # the flusher is gone: the release below waits in the queue
    limiter.release(user_id, "c")
    assert await redis.zcard(leases_of(user_id)) == 1
    await limiter.stop()
    assert await redis.zcard(leases_of(user_id)) == 0


async def test_an_unreachable_redis_allows_the_stream_and_is_counted(user_id: str) -> None:
    client = unreachable_redis()
    metrics = Metrics()
    try:
        async with limiting(client, 1, metrics) as limiter:
            async with asyncio.timeout(1):  # at once, not after acquire()'s own 2 s deadline
                granted = [await limiter.acquire(user_id, f"c{n}") for n in range(3)]
    finally:
        await client.aclose()
    assert granted == [True, True, True]
    errors = metrics.registry.get_sample_value(
        "gateway_redis_errors_total", {"operation": "connection_lease"}
    )
    assert errors == 3
