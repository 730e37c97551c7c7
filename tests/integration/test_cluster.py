"""REDIS_MODE=cluster against a real cluster: three primaries, three replicas, sharded pub/sub.

Users are picked so that their channels land on every shard. Streams get their events and
resume from history on each shard; every worker holds at most one pub/sub connection per node;
a primary killed under open streams (its replica takes over) and a slot migrated under an open
stream cost the clients nothing: they are backfilled from history, without resync.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from websockets.asyncio.client import connect

import events
from events.channels import KeySpace
from publishers import EventPublisher, InvalidEventError, PublishError
from quart_gateway.live.cluster import ClusterMultiplexer
from quart_gateway.settings import Secret, Settings
from tests.servers import ClusterTopology, LiveGateway, SettingsFactory, serving, start_cluster
from tests.support import SseClient, make_token, wait_until, ws_next

KEYS = KeySpace(cluster=True)


@pytest.fixture(name="cluster", scope="module")
def _cluster() -> Iterator[ClusterTopology]:
    """Shared by the tests that leave the topology as it is."""
    topology = start_cluster()
    yield topology
    topology.stop()


@pytest.fixture(name="own_cluster")
def _own_cluster() -> Iterator[ClusterTopology]:
    """A cluster of the test's own, for tests that kill a node or move slots."""
    topology = start_cluster()
    yield topology
    topology.stop()


def slot_of(user_id: str) -> int:
    return key_slot(KEYS.channel(user_id).encode())


def users_per_shard(cluster: ClusterTopology) -> dict[int, str]:
    """One fresh user id whose channel lands on each primary (port -> user id)."""
    wanted = set(cluster.primaries())
    found: dict[int, str] = {}
    while set(found) != wanted:
        user = f"user-{uuid.uuid4().hex[:12]}"
        found.setdefault(cluster.owner_of(slot_of(user)), user)
    return found


def numbered(n: int) -> events.Event:
    return events.ClassUpdated(class_id=str(n), class_designation=f"v{n}")


def pubsub_connections(cluster: ClusterTopology) -> dict[int, int]:
    """Per live primary, how many connections are named `gateway-pubsub`."""
    from tests.servers import _ask

    counts = {}
    for port in cluster.primaries():
        lines = str(_ask(port, "CLIENT", "LIST")).splitlines()
        counts[port] = sum(1 for line in lines if "name=gateway-pubsub" in line.split())
    return counts


def cluster_settings(make_settings: SettingsFactory, cluster: ClusterTopology) -> Settings:
    return make_settings(
        redis_url=Secret(cluster.url), redis_mode="cluster", redis_probe_interval_seconds=0.5
    )


@pytest.fixture(name="publisher")
async def _publisher(cluster: ClusterTopology) -> AsyncIterator[EventPublisher]:
    async with EventPublisher.from_url(cluster.url, cluster=True) as publisher:
        yield publisher


@pytest.fixture(name="settings")
def _settings(make_settings: SettingsFactory, cluster: ClusterTopology) -> Settings:
    return cluster_settings(make_settings, cluster)


async def test_delivery_to_users_on_every_shard_one_connection_per_node(
    cluster: ClusterTopology, settings: Settings, http: httpx.AsyncClient, publisher: EventPublisher
) -> None:
    users = users_per_shard(cluster)
    assert len(users) == 3
    u0, u1, u2 = (users[port] for port in sorted(users))
    async with (
        serving(settings) as a,
        serving(settings) as b,
        http.stream("GET", f"{a.url}/events", params={"token": make_token(u0)}) as r0,
        http.stream("GET", f"{a.url}/events", params={"token": make_token(u1)}) as r1,
        http.stream("GET", f"{b.url}/events", params={"token": make_token(u2)}) as r2,
        connect(f"{b.ws_url}/ws?token={make_token(u0)}") as ws,
    ):
        tabs = {u0: SseClient(r0), u1: SseClient(r1), u2: SseClient(r2)}
        for tab in tabs.values():
            assert (await tab.next()).data["event"] == "connected"
        assert (await ws_next(ws))["event"] == "connected"
        published = {user: await publisher.publish(user, numbered(i)) for i, user in
                     enumerate(tabs)}  # fmt: skip
        for user, tab in tabs.items():
            assert (await tab.next_domain()).data["id"] == published[user]  # its own, only
        assert (await ws_next(ws))["id"] == published[u0]
        # Legacy publishers SPUBLISH to the tagged channel: delivered live, without id.
        legacy = '{"event":"class_created","class_id":"c","class_designation":"x"}'
        client = RedisCluster.from_url(cluster.url)
        try:
            await client.spublish(KEYS.channel(u1), legacy)
        finally:
            await client.aclose()
        message = (await tabs[u1].next_domain()).data
        assert message["class_id"] == "c"
        assert "id" not in message
        for gateway in (a, b):
            mux = gateway.services.mux
            assert isinstance(mux, ClusterMultiplexer)
            assert len(mux.nodes()) == 3
        # Two workers, three primaries: one pub/sub connection per worker per node.
        assert pubsub_connections(cluster) == dict.fromkeys(cluster.primaries(), 2)
        assert (await http.get(f"{a.url}/readyz")).status_code == 200


async def test_resume_from_history_on_every_shard(
    cluster: ClusterTopology, settings: Settings, http: httpx.AsyncClient, publisher: EventPublisher
) -> None:
    users = users_per_shard(cluster)
    async with serving(settings) as live:
        for user in users.values():
            first = await publisher.publish(user, numbered(0))
            missed = [await publisher.publish(user, numbered(n)) for n in (1, 2, 3)]
            params = {"token": make_token(user)}
            headers = {"Last-Event-ID": first}
            async with http.stream(
                "GET", f"{live.url}/events", params=params, headers=headers
            ) as response:
                tab = SseClient(response)
                assert (await tab.next()).data["event"] == "connected"
                assert [(await tab.next_domain()).id for _ in missed] == missed
                after = await publisher.publish(user, numbered(4))
                assert (await tab.next_domain()).id == after
        # Leases and rate limits of every shard were used on the way, one slot per script.
        assert (await http.get(f"{live.url}/readyz")).status_code == 200


async def _publish_and_stream(
    live: LiveGateway,
    http: httpx.AsyncClient,
    publisher: EventPublisher,
    users: list[str],
    disturb: Any,
) -> None:
    """Open a stream per user, keep publishing to all of them, `await disturb()`, then check
    that every stream received every acknowledged event, in order, without resync."""
    published: dict[str, list[str]] = {user: [] for user in users}
    failures = 0
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        nonlocal failures
        n = 0
        while not stop.is_set():
            for user in users:
                try:
                    published[user].append(await publisher.publish(user, numbered(n)))
                except PublishError:
                    failures += 1  # while the cluster fails over: not acknowledged
            n += 1
            await asyncio.sleep(0.05)

    async with (
        http.stream("GET", f"{live.url}/events", params={"token": make_token(users[0])}) as sse,
        connect(f"{live.ws_url}/ws?token={make_token(users[1])}") as ws,
        http.stream("GET", f"{live.url}/events", params={"token": make_token(users[2])}) as sse2,
    ):
        tab, tab2 = SseClient(sse), SseClient(sse2)
        assert (await tab.next()).data["event"] == "connected"
        assert (await tab2.next()).data["event"] == "connected"
        assert (await ws_next(ws))["event"] == "connected"
        publishing = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.3)
        await disturb()
        counts = {user: len(ids) for user, ids in published.items()}
        await wait_until(
            lambda: all(len(published[u]) >= counts[u] + 10 for u in users), timeout=30
        )
        stop.set()
        await publishing

        async def ready() -> bool:
            return (await http.get(f"{live.url}/readyz")).status_code == 200

        await wait_until(ready, timeout=20)
        for user, receive in (
            (users[0], lambda: tab.next_domain(timeout=20)),
            (users[2], lambda: tab2.next_domain(timeout=20)),
        ):
            ids = []
            for _ in published[user]:
                message = (await receive()).data
                assert message["event"] != "resync", message
                ids.append(message["id"])
            assert ids == published[user]  # nothing lost, nothing repeated, in order
        ws_ids = []
        for _ in published[users[1]]:
            message = await ws_next(ws, timeout=20)
            assert message["event"] != "resync", message
            ws_ids.append(message["id"])
        assert ws_ids == published[users[1]]


async def test_a_primary_failover_under_open_streams(
    own_cluster: ClusterTopology, make_settings: SettingsFactory, http: httpx.AsyncClient
) -> None:
    users = users_per_shard(own_cluster)
    victim = sorted(users)[0]
    # The user on the killed primary first, so each transport sees a moved channel or not.
    ordered = [users[victim], *(users[p] for p in sorted(users) if p != victim)]
    async with (
        serving(cluster_settings(make_settings, own_cluster)) as live,
        EventPublisher.from_url(
            own_cluster.url_avoiding(victim), cluster=True, timeout=1.0
        ) as publisher,
    ):

        async def kill_primary() -> None:
            own_cluster.nodes[victim].kill()
            await wait_until(
                lambda: own_cluster.owner_of(slot_of(users[victim])) != victim,
                timeout=30,
                interval=0.2,
            )

        await _publish_and_stream(live, http, publisher, ordered, kill_primary)
        mux = live.services.mux
        assert isinstance(mux, ClusterMultiplexer)
        assert f"127.0.0.1:{victim}" not in mux.nodes()
        assert len(mux.nodes()) == 3  # the promoted replica took the dead primary's place
    assert max(pubsub_connections(own_cluster).values()) <= 1


async def test_a_slot_migration_under_an_open_stream(
    own_cluster: ClusterTopology, make_settings: SettingsFactory, http: httpx.AsyncClient
) -> None:
    primaries = own_cluster.primaries()
    source, target = sorted(primaries)[:2]
    first_slot = own_cluster.first_slot_of(source)
    moved_user = f"user-{uuid.uuid4().hex[:12]}"
    while not first_slot <= slot_of(moved_user) < first_slot + 3:
        moved_user = f"user-{uuid.uuid4().hex[:12]}"
    others = [u for p, u in users_per_shard(own_cluster).items() if p != source]
    async with (
        serving(cluster_settings(make_settings, own_cluster)) as live,
        EventPublisher.from_url(own_cluster.url, cluster=True, timeout=2.0) as publisher,
    ):

        async def reshard() -> None:
            await asyncio.to_thread(
                own_cluster.cli,
                "--cluster", "reshard", f"127.0.0.1:{source}",
                "--cluster-from", primaries[source],
                "--cluster-to", primaries[target],
                "--cluster-slots", "3",
                "--cluster-yes",
            )  # fmt: skip
            assert own_cluster.owner_of(slot_of(moved_user)) == target

        await _publish_and_stream(live, http, publisher, [moved_user, *others], reshard)
        assert (await http.get(f"{live.url}/readyz")).status_code == 200
    assert max(pubsub_connections(own_cluster).values()) <= 1


async def test_connection_leases_hold_for_users_on_every_shard(cluster: ClusterTopology) -> None:
    """One batch of lease operations for users of many slots runs one script per slot."""
    from quart_gateway.admission.connection_limit import ConnectionLimiter
    from quart_gateway.aio.supervisor import TaskSupervisor
    from quart_gateway.ops.metrics import Metrics

    users = [f"user-{uuid.uuid4().hex[:12]}" for _ in range(40)]
    metrics = Metrics()
    client = RedisCluster.from_url(cluster.url)
    limiter = ConnectionLimiter(client, 2, metrics)
    tasks = TaskSupervisor()
    limiter.start(tasks)
    try:
        verdicts = await asyncio.gather(
            *(limiter.acquire(user, f"c{n}") for user in users for n in range(3))
        )
        for i, _ in enumerate(users):
            assert sorted(verdicts[3 * i : 3 * i + 3]) == [False, True, True]
        assert all([await client.zcard(f"conn-leases:{{{user}}}") == 2 for user in users])
        assert metrics.redis_errors.labels(operation="connection_lease")._value.get() == 0
    finally:
        await tasks.stop()
        await limiter.stop()
        await client.aclose()


async def test_publisher_errors_are_the_documented_ones_in_cluster_mode(
    cluster: ClusterTopology, publisher: EventPublisher
) -> None:
    with pytest.raises(InvalidEventError):
        await publisher.publish("u", {"event": "not-a-domain-event"})
    async with EventPublisher.from_url(
        "redis://127.0.0.1:1/0", cluster=True, timeout=1.0
    ) as unreachable:
        with pytest.raises(PublishError):
            await unreachable.publish("u", numbered(0))
