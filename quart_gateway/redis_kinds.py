"""What the gateway's Redis users need to serve a single Redis and a Redis Cluster alike.

In a cluster every script runs on one slot's node and may only touch keys of that slot. The
gateway's batched scripts (history reads, cursors, connection leases) therefore run once per
slot there (`per_slot`); standalone and Sentinel keep one call per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from events.channels import KeySpace

RedisClient = aioredis.Redis | RedisCluster

# What a Redis call can fail with. A cluster client raises RedisClusterException (not a
# RedisError) when no node answers or a slot is not served.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)

# Scripts in flight at once for one batch: a cluster client opens a connection per call.
SLOT_CONCURRENCY = 4

T = TypeVar("T")


def key_space(client: RedisClient) -> KeySpace:
    """The names `client`'s deployment uses: hash-tagged in a cluster."""
    return KeySpace(cluster=isinstance(client, RedisCluster))


async def per_slot(
    client: RedisClient,
    keys: Sequence[str],
    call: Callable[[list[int]], Awaitable[list[T]]],
) -> list[T]:
    """`call(indices)` once for all of `keys` on a single Redis; on a cluster once per group of
    keys sharing a slot (a few at a time). Each call returns one result per index it got;
    the results come back in the order of `keys`."""
    if not isinstance(client, RedisCluster):
        return await call(list(range(len(keys))))
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(i)
    gate = asyncio.Semaphore(SLOT_CONCURRENCY)

    async def run(indices: list[int]) -> list[T]:
        async with gate:
            return await call(indices)

    results = await asyncio.gather(*(run(indices) for indices in groups.values()))
    out: list[Any] = [None] * len(keys)
    for indices, result in zip(groups.values(), results, strict=True):
        for i, value in zip(indices, result, strict=True):
            out[i] = value
    return out
