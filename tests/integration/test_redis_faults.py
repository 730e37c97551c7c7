"""The multiplexer under Redis faults, through a TCP proxy that can go silent or cut."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from publishers import EventPublisher
from quart_gateway.serving.embedded import EmbeddedRedis
from quart_gateway.settings import Secret
from tests.servers import SettingsFactory, serving
from tests.support import TcpProxy, make_token, wait_until, ws_next


@pytest.fixture(name="proxy")
async def _proxy(redis_server: EmbeddedRedis) -> AsyncIterator[TcpProxy]:
    assert redis_server.port is not None
    proxy = TcpProxy(redis_server.port)
    await proxy.start()
    yield proxy
    await proxy.close()


LEGACY = '{"event":"class_created","class_id":"legacy","class_designation":"x"}'


async def test_a_silent_redis_is_detected_and_the_listener_recovers(
    make_settings: SettingsFactory, proxy: TcpProxy, redis_url: str, user_id: str
) -> None:
    settings = dataclasses.replace(
        make_settings(redis_probe_interval_seconds=0.2), redis_url=Secret(proxy.url)
    )
    direct = aioredis.Redis.from_url(redis_url)
    async with (
        serving(settings) as live,
        connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn,
    ):
        assert (await ws_next(conn))["event"] == "connected"
        # A bare PUBLISH: history cannot backfill this channel, so the gap ends in resync.
        await direct.publish(f"ws:{user_id}", LEGACY)
        assert (await ws_next(conn))["class_id"] == "legacy"
        proxy.pause()  # TCP stays up, nothing gets through: a half-open connection
        await wait_until(lambda: not live.services.mux.statistics().healthy, timeout=5)
        proxy.cut()
        proxy.resume()
        resync = await ws_next(conn, timeout=10)
        assert (resync["event"], resync["reason"]) == ("resync", "redis_reconnected")
        await direct.publish(
            f"ws:{user_id}", '{"event":"class_created","class_id":"c","class_designation":"x"}'
        )
        assert (await ws_next(conn))["class_id"] == "c"
        assert live.services.mux.statistics().reconnects >= 1
    await direct.aclose()


async def test_a_cut_connection_is_resubscribed_with_every_channel(
    make_settings: SettingsFactory, proxy: TcpProxy, redis_url: str, user_id: str
) -> None:
    settings = dataclasses.replace(make_settings(), redis_url=Secret(proxy.url))
    users = [f"{user_id}-{i}" for i in range(5)]
    direct = aioredis.Redis.from_url(redis_url)
    async with serving(settings) as live:
        sockets = []
        for user in users:
            conn = await connect(f"{live.ws_url}/ws?token={make_token(user)}")
            assert (await ws_next(conn))["event"] == "connected"
            await direct.publish(f"ws:{user}", LEGACY)  # history cannot backfill: resync
            assert (await ws_next(conn))["class_id"] == "legacy"
            sockets.append(conn)
        for _ in range(3):  # repeatedly: the backoff resets after each success
            proxy.cut()
            for conn in sockets:
                assert (await ws_next(conn, timeout=10))["event"] == "resync"
        for user, conn in zip(users, sockets, strict=True):
            await direct.publish(
                f"ws:{user}",
                json.dumps({"event": "class_created", "class_id": user, "class_designation": "x"}),
            )
            assert (await ws_next(conn))["class_id"] == user
        for conn in sockets:
            await conn.close()
    await direct.aclose()


async def test_streams_opened_during_an_outage_wait_and_then_connect(
    make_settings: SettingsFactory, private_redis: EmbeddedRedis, user_id: str
) -> None:
    settings = dataclasses.replace(make_settings(), redis_url=Secret(private_redis.url))
    async with serving(settings) as live:
        private_redis.kill()
        await wait_until(lambda: not live.services.mux.statistics().connected, timeout=5)
        async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
            private_redis.start()
            first = await ws_next(conn, timeout=15)
            assert first["event"] == "connected"  # only once the subscription is really active
            direct = aioredis.Redis.from_url(private_redis.url)
            await direct.publish(
                f"ws:{user_id}", '{"event":"class_created","class_id":"c","class_designation":"x"}'
            )
            assert (await ws_next(conn))["class_id"] == "c"
            await direct.aclose()


async def test_a_deaf_listener_is_found_by_its_canary_and_backfills(
    make_settings: SettingsFactory,
    proxy: TcpProxy,
    http: httpx.AsyncClient,
    redis_url: str,
    user_id: str,
) -> None:
    settings = dataclasses.replace(
        make_settings(redis_probe_interval_seconds=0.2), redis_url=Secret(proxy.url)
    )
    event = {"event": "class_created", "class_id": "c", "class_designation": "x"}
    async with (
        EventPublisher.from_url(redis_url) as publisher,
        serving(settings) as live,
        connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn,
    ):
        assert (await ws_next(conn))["event"] == "connected"
        first = await publisher.publish(user_id, event)
        assert (await ws_next(conn))["id"] == first
        await wait_until(lambda: live.services.mux.statistics().canary_round_trip is not None)
        # The connection still answers PING, but nothing published reaches it any more.
        proxy.deafen()
        missed = await publisher.publish(user_id, event)
        saw_not_ready = False

        async def recovered() -> bool:
            nonlocal saw_not_ready
            ready = (await http.get(f"{live.url}/readyz")).status_code == 200
            saw_not_ready = saw_not_ready or not ready
            return ready and live.services.mux.statistics().deaf_detections >= 1

        await wait_until(recovered, timeout=10, interval=0.05)
        assert saw_not_ready
        assert (await ws_next(conn, timeout=5))["id"] == missed  # backfilled, no resync
        later = await publisher.publish(user_id, event)
        assert (await ws_next(conn))["id"] == later
