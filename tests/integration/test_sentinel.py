"""REDIS_MODE=sentinel: a real primary, replica and three sentinels. The primary is killed
under open streams while a publisher keeps publishing: every gateway resubscribes to the new
primary, publishing resumes, and the streams receive every event without resync."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from publishers import EventPublisher, PublishError
from tests.servers import (
    SentinelTopology,
    SettingsFactory,
    current_primary_port,
    serving,
    start_sentinel_topology,
)
from tests.support import SseClient, make_token, wait_until, ws_next


@pytest.fixture(name="topology")
def _topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    topology = start_sentinel_topology(tmp_path)
    yield topology
    topology.stop()


async def test_gateways_and_publishers_follow_a_failover(
    topology: SentinelTopology,
    make_settings: SettingsFactory,
    http: httpx.AsyncClient,
    user_id: str,
) -> None:
    settings = make_settings(
        redis_url=None,
        redis_mode="sentinel",
        redis_sentinels=topology.addresses,
        redis_probe_interval_seconds=0.5,
    )
    old_primary = topology.primary.port
    event = {"event": "class_created", "class_id": "c", "class_designation": "x"}
    published: list[str] = []
    failures = 0
    async with (
        serving(settings) as a,
        serving(settings) as b,
        EventPublisher.from_sentinel(topology.addresses, timeout=1.0) as publisher,
        http.stream("GET", f"{a.url}/events", params={"token": make_token(user_id)}) as sse,
        connect(f"{b.ws_url}/ws?token={make_token(user_id)}") as ws,
    ):
        tab = SseClient(sse)
        assert (await tab.next()).data["event"] == "connected"
        assert (await ws_next(ws))["event"] == "connected"
        published.append(await publisher.publish(user_id, event))
        stop = asyncio.Event()

        async def keep_publishing() -> None:
            nonlocal failures
            while not stop.is_set():
                try:
                    published.append(await publisher.publish(user_id, event))
                except PublishError:
                    failures += 1  # during the failover: the next call finds the new primary
                await asyncio.sleep(0.05)

        publishing = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.3)
        topology.primary.kill()
        await wait_until(
            lambda: current_primary_port(topology) != old_primary, timeout=20, interval=0.2
        )
        count = len(published)
        await wait_until(lambda: len(published) >= count + 10, timeout=20)  # publishing resumed
        stop.set()
        await publishing
        for gateway in (a, b):
            assert gateway.services.mux.statistics().reconnects >= 1  # resubscribed

        async def ready() -> bool:
            statuses = [(await http.get(f"{g.url}/readyz")).status_code for g in (a, b)]
            return statuses == [200, 200]

        await wait_until(ready, timeout=20)
        sse_ids = []
        for _ in published:
            message = (await tab.next_domain(timeout=20)).data
            assert message["event"] != "resync", message
            sse_ids.append(message["id"])
        ws_ids = []
        for _ in published:
            message = await ws_next(ws, timeout=20)
            assert message["event"] != "resync", message
            ws_ids.append(message["id"])
    assert sse_ids == published  # backfilled from the new primary: nothing lost or repeated
    assert ws_ids == published
