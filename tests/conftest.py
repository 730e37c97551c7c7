"""Fixtures: a private redis-server per session, loopback upstreams, the gateway in-process
(Quart test app, or Hypercorn on a free port) and as a real process. The servers themselves
are in `tests/servers.py`."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from quart import Quart

from publishers import EventPublisher
from quart_gateway.serving.embedded import EmbeddedRedis
from quart_gateway.settings import Secret, Settings
from tests.servers import (
    GatewayProcess,
    LiveGateway,
    ProcessFactory,
    SettingsFactory,
    running_app,
    serving,
    start_process,
    start_redis,
)
from tests.support import SECRET, Upstream, start_upstream

# Property tests: bounded by each test's max_examples, no example database left behind, and no
# wall-clock limits (CI machines are shared: a slow example is not a failure).
settings.register_profile(
    "gateway", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("gateway")


@pytest.fixture(name="redis_server", scope="session")
def _redis_server() -> Iterator[EmbeddedRedis]:
    server = start_redis()
    yield server
    server.cleanup()


@pytest.fixture(name="redis_url", scope="session")
def _redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(name="redis")
async def _redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's server, for a test to look at or change what is stored."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(name="publisher")
async def _publisher(redis_url: str) -> AsyncIterator[EventPublisher]:
    """The publishers library against the session's server (tests of it build their own)."""
    async with EventPublisher.from_url(redis_url) as publisher:
        yield publisher


@pytest.fixture(name="private_redis")
def _private_redis() -> Iterator[EmbeddedRedis]:
    """A server of the test's own, for tests that kill and restart it."""
    server = start_redis()
    yield server
    server.cleanup()


@pytest.fixture(name="user_id")
def _user_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture(name="upstream")
def _upstream() -> Iterator[Upstream]:
    upstream, server = start_upstream()
    yield upstream
    server.shutdown()
    server.server_close()


@pytest.fixture(name="make_settings")
def _make_settings(redis_url: str, upstream: Upstream) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        base = Settings(
            redis_url=Secret(redis_url),
            jwt_secret_key=Secret(SECRET),
            result_aggregator_url=upstream.url,
            bos_url=upstream.url,
            upstream_timeout_seconds=1.0,
            heartbeat_interval_seconds=30.0,
            log_format="text",
        )
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture(name="app")
async def _app(make_settings: SettingsFactory) -> AsyncIterator[Quart]:
    async with running_app(make_settings()) as app:
        yield app


@pytest.fixture(name="live")
async def _live(make_settings: SettingsFactory) -> AsyncIterator[LiveGateway]:
    async with serving(make_settings()) as gateway:
        yield gateway


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture(name="gateway_process")
async def _gateway_process(tmp_path: Path) -> AsyncIterator[ProcessFactory]:
    started: list[GatewayProcess] = []

    async def start(env: dict[str, str] | None = None, port: int | None = None) -> GatewayProcess:
        gateway = await start_process(env or {}, tmp_path / f"gateway-{len(started)}.log", port)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait()
