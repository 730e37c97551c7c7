"""What one published event costs Redis: one server against a three-shard cluster.

    PYTHONPATH=. python docs/examples/publish_cost.py [--events N] [--concurrency N] [--users N]

Starts a private redis-server and a six-node cluster (three primaries, three replicas; needs
`redis-server` and `redis-cli` on PATH), publishes the same events through `EventPublisher`
to each, with one gateway-like subscriber per primary holding every user's channel, and
prints the publish rate and the Redis CPU time per event (user + system, summed over the
primaries, from `INFO cpu`). The CPU time per event is what sizes a deployment: one Redis
process uses one core for commands, so it saturates near 1 / (CPU seconds per event) events/s.
Run it from the repository root (it uses the test fixtures' servers); it changes nothing outside
its temporary directories.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

import events
from events.channels import KeySpace
from publishers import EventPublisher
from tests.servers import start_cluster, start_redis


async def cpu_seconds(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        client = aioredis.Redis(port=port)
        info: dict[str, Any] = await client.info("cpu")
        await client.aclose()
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def subscribe_all(ports: list[int], keys: KeySpace, users: list[str]) -> list[Any]:
    """One pub/sub connection per primary holding every user channel it serves (as a worker)."""
    subscribers = []
    for port in ports:
        client = aioredis.Redis(port=port)
        pubsub = client.pubsub()
        if keys.cluster:
            from redis.crc import key_slot

            served = {
                slot
                for start, end, primary, *_ in await client.execute_command("CLUSTER", "SLOTS")
                if int(primary[1]) == port
                for slot in range(int(start), int(end) + 1)
            }
            names = [keys.channel(u) for u in users if key_slot(keys.channel(u).encode()) in served]
            for name in names:
                await pubsub.execute_command("SSUBSCRIBE", name)
        else:
            await pubsub.subscribe(*(keys.channel(u) for u in users))
        subscribers.append((client, pubsub))
    return subscribers


async def drain(subscribers: list[Any], stop: asyncio.Event) -> None:
    async def one(pubsub: Any) -> None:
        while not stop.is_set():
            await pubsub.parse_response(block=False, timeout=0.1)

    await asyncio.gather(*(one(p) for _, p in subscribers))


async def measure(
    name: str, publisher: EventPublisher, ports: list[int], keys: KeySpace, args: Any
) -> None:
    users = [f"user-{n}" for n in range(args.users)]
    subscribers = await subscribe_all(ports, keys, users)
    stop = asyncio.Event()
    draining = asyncio.create_task(drain(subscribers, stop))
    event = events.ClassUpdated(class_id="c", class_designation="x" * 100)
    await publisher.publish(users[0], event)  # connects and loads the script first
    queue = list(range(args.events))
    before = await cpu_seconds(ports)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            n = queue.pop()
            await publisher.publish(users[n % len(users)], event)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    cpu = await cpu_seconds(ports) - before
    stop.set()
    await draining
    for client, pubsub in subscribers:
        await pubsub.aclose()
        await client.aclose()
    per_event_us = cpu / args.events * 1e6
    print(
        f"{name:>10}: {args.events / elapsed:8.0f} events/s from one client process; "
        f"Redis CPU {per_event_us:5.1f} µs/event over {len(ports)} primaries "
        f"(one core saturates near {1e6 / per_event_us * len(ports):,.0f} events/s "
        f"across {len(ports)})"
    )


async def main(args: Any) -> None:
    single = start_redis()
    cluster = start_cluster()
    try:
        assert single.port is not None
        async with EventPublisher.from_url(single.url) as publisher:
            await measure("one Redis", publisher, [single.port], KeySpace(), args)
        primaries = sorted(cluster.primaries())
        client = RedisCluster.from_url(cluster.url, max_connections=2 * args.concurrency + 16)
        async with EventPublisher(client) as publisher:
            await measure("3 shards", publisher, primaries, KeySpace(cluster=True), args)
        await client.aclose()
    finally:
        single.cleanup()
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
