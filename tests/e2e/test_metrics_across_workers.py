"""`GET /metrics` under `python -m quart_gateway` with two workers: every scrape, whichever
worker answers it, reports both; a worker that dies leaves its counters in the totals."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.servers import GatewayProcess, ProcessFactory
from tests.support import make_token, wait_until, ws_next

STREAMS = 20


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = [
            s for family in text_string_to_metric_families(text) for s in family.samples
        ]

    def values(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (s.labels, s.value)
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.values(name, **labels))

    def per_worker(self, name: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for sample_labels, value in self.values(name, **labels):
            out[sample_labels["worker"]] += value
        return dict(out)


async def scrape(gateway: GatewayProcess) -> Scrape:
    # A new client, so a new TCP connection: the kernel hands it to either worker.
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{gateway.url}/metrics")
    assert response.status_code == 200
    return Scrape(response.text)


async def open_streams(gateway: GatewayProcess, user_id: str, count: int) -> list[Any]:
    streams = []
    for n in range(count):
        conn = await connect(f"{gateway.ws_url}/ws?token={make_token(f'{user_id}-{n}')}")
        assert (await ws_next(conn))["event"] == "connected"
        streams.append(conn)
    return streams


@asynccontextmanager
async def two_workers_holding_streams(
    gateway_process: ProcessFactory, redis_url: str, user_id: str
) -> AsyncIterator[tuple[GatewayProcess, list[Any]]]:
    """`python -m quart_gateway` with 2 workers and STREAMS WebSockets open, all counted."""
    gateway = await gateway_process({"REDIS_URL": redis_url, "WEB_CONCURRENCY": "2"})
    streams = await open_streams(gateway, user_id, STREAMS)
    try:

        async def all_counted() -> bool:
            # Ready is one worker ready: the other may still be starting. And a peer's numbers
            # are up to a second old.
            metrics = await scrape(gateway)
            return (
                len(metrics.per_worker("gateway_listener_healthy")) == 2
                and metrics.total("gateway_connections", transport="ws") == STREAMS
            )

        await wait_until(all_counted, timeout=5)
        yield gateway, streams
    finally:
        for conn in streams:
            await conn.close()
    gateway.terminate()  # the supervisor removes the group's metrics directory
    assert gateway.wait(15) == 0


async def test_every_scrape_reports_both_workers(
    gateway_process: ProcessFactory, redis_url: str, user_id: str
) -> None:
    async with two_workers_holding_streams(gateway_process, redis_url, user_id) as (gateway, _):
        for _ in range(12):
            metrics = await scrape(gateway)
            # Both workers, each under its pid (one that never had a stream has no sample).
            assert len(metrics.per_worker("gateway_listener_healthy")) == 2
            connections = metrics.per_worker("gateway_connections", transport="ws")
            assert sum(connections.values()) == STREAMS
            opened = metrics.values("gateway_connections_opened_total", transport="ws")
            assert [labels for labels, _ in opened] == [{"transport": "ws"}]  # summed
            assert opened[0][1] == STREAMS
            assert max(metrics.per_worker("gateway_metrics_snapshot_age_seconds").values()) < 3


async def test_a_dead_worker_keeps_its_counters_and_loses_its_gauges(
    gateway_process: ProcessFactory, redis_url: str, user_id: str
) -> None:
    async with two_workers_holding_streams(gateway_process, redis_url, user_id) as (
        gateway,
        streams,
    ):
        metrics = await scrape(gateway)
        before = defaultdict(float, metrics.per_worker("gateway_connections", transport="ws"))
        victim, survivor = sorted(
            metrics.per_worker("gateway_listener_healthy"), key=lambda pid: -before[pid]
        )  # the victim holds more streams
        os.kill(int(victim), signal.SIGKILL)

        async def replaced() -> bool:
            workers = (await scrape(gateway)).per_worker("gateway_listener_healthy")
            return len(workers) == 2 and victim not in workers and survivor in workers

        await wait_until(replaced, timeout=15)
        for _ in range(6):
            metrics = await scrape(gateway)
            connections = metrics.per_worker("gateway_connections", transport="ws")
            assert victim not in connections
            assert connections.get(survivor, 0) == before[survivor]
            assert sum(connections.values()) == STREAMS - before[victim]
            # The dead worker's streams were opened: the total does not go down.
            assert metrics.total("gateway_connections_opened_total", transport="ws") == STREAMS
        streams += await open_streams(gateway, f"{user_id}-again", 1)

        async def counted_once_more() -> bool:
            metrics = await scrape(gateway)
            return metrics.total("gateway_connections_opened_total", transport="ws") == STREAMS + 1

        await wait_until(counted_once_more, timeout=5)
        assert '"level": "ERROR"' in gateway.logs()  # the crash, reported
        assert "cannot retire" not in gateway.logs()
