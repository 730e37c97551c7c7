"""What a restart or an overload looks like to a client: admission control, the cursor in
`connected`, backfill after a pub/sub gap, and the maximum connection lifetime.

Real Redis, the gateway served by Hypercorn on loopback, real clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from events.channels import history_key
from publishers import EventPublisher, PublishError
from quart_gateway.settings import Secret
from tests.servers import LiveGateway, SettingsFactory, serving, start_redis
from tests.support import SseClient, make_token, wait_until, ws_close_of, ws_next


def class_created(n: int) -> dict[str, object]:
    return {"event": "class_created", "class_id": f"c{n}", "class_designation": str(n)}


async def publish_retrying(
    publisher: EventPublisher, user_id: str, event: dict[str, object]
) -> str:
    """As a service would: a call on a connection the restart closed fails; the next works."""
    for _ in range(20):
        try:
            return await publisher.publish(user_id, event)
        except PublishError:
            await asyncio.sleep(0.05)
    raise AssertionError("Redis did not come back")


def rejected(live: LiveGateway, transport: str, reason: str) -> float:
    value = live.services.metrics.registry.get_sample_value(
        "gateway_connections_rejected_total", {"transport": transport, "reason": reason}
    )
    return value or 0.0


async def kill_pubsub(redis: aioredis.Redis) -> None:
    """Cut the gateway's pub/sub connection behind its back, as a failover or a proxy would."""
    for info in await redis.client_list():
        if info.get("name") == "gateway-pubsub":
            await redis.client_kill_filter(_id=info["id"])


# --- admission control ---------------------------------------------------------------------------


async def test_an_overloaded_worker_turns_streams_away_with_a_retry_hint(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with serving(make_settings(admission_max_pending=1)) as live:
        gate = live.services.setup_gate
        assert gate.try_enter()  # a set-up in flight holds the only slot
        try:
            token = make_token(user_id)
            async with connect(f"{live.ws_url}/ws?token={token}") as conn:
                code, reason, messages = await ws_close_of(conn)
            assert (code, reason) == (1013, "overloaded")
            (notice,) = messages
            assert notice["event"] == "disconnect"
            assert 1000 <= notice["retry_ms"] <= 5000
            response = await http.get(f"{live.url}/events", params={"token": token})
            assert response.status_code == 200  # never a 5xx: EventSource would give up
            tab = SseClient(response)
            (farewell,) = await tab.until_end()
            assert farewell.data["reason"] == "overloaded"
            assert farewell.retry == farewell.data["retry_ms"]
            assert rejected(live, "ws", "overloaded") == 1
            assert rejected(live, "sse", "overloaded") == 1
        finally:
            gate.leave()
        async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
            assert (await ws_next(conn))["event"] == "connected"
            # The slot is given back once `connected` is out, not when the stream ends.
            await wait_until(lambda: gate.statistics().pending == 0)


async def test_refusals_before_admission_free_their_set_up_slot(
    make_settings: SettingsFactory, http: httpx.AsyncClient
) -> None:
    async with serving(make_settings(admission_max_pending=1)) as live:
        for _ in range(3):
            response = await http.get(f"{live.url}/events", params={"token": "garbage"})
            assert response.status_code == 401
        assert live.services.setup_gate.statistics().pending == 0


# --- the cursor ----------------------------------------------------------------------------------


async def test_connected_carries_a_cursor_that_is_also_the_sse_id(
    live: LiveGateway, http: httpx.AsyncClient, publisher: EventPublisher, user_id: str
) -> None:
    newest = await publisher.publish(user_id, class_created(1))
    async with http.stream(
        "GET", f"{live.url}/events", params={"token": make_token(user_id)}
    ) as response:
        connected = await SseClient(response).next()
    assert connected.data["cursor"] == newest
    assert connected.id == newest  # EventSource sends it back as Last-Event-ID by itself


async def test_an_empty_history_gets_a_marker_so_the_cursor_names_an_entry(
    live: LiveGateway, redis: aioredis.Redis, user_id: str
) -> None:
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
        cursor = (await ws_next(conn))["cursor"]
    entries = await redis.xrange(history_key(user_id))
    assert [(i.decode(), f) for i, f in entries] == [(cursor, {b"m": b""})]
    assert 0 < await redis.pttl(history_key(user_id)) <= 86_400_000


async def test_a_client_that_received_nothing_resumes_from_the_cursor_without_loss(
    live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
        cursor = (await ws_next(conn))["cursor"]
    # Published while the client was away, before it had seen a single event.
    missed = [await publisher.publish(user_id, class_created(n)) for n in range(3)]
    url = f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={cursor}"
    async with connect(url) as conn:
        connected = await ws_next(conn)
        assert connected["cursor"] == cursor
        assert [(await ws_next(conn))["id"] for _ in missed] == missed
        later = await publisher.publish(user_id, class_created(9))
        assert (await ws_next(conn))["id"] == later


async def test_resync_carries_a_fresh_cursor(
    live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    newest = await publisher.publish(user_id, class_created(1))
    url = f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id=1-0"
    async with connect(url) as conn:
        assert (await ws_next(conn))["cursor"] == newest
        resync = await ws_next(conn)
    assert (resync["event"], resync["cursor"]) == ("resync", newest)


# --- backfill after a pub/sub gap ----------------------------------------------------------------


async def test_a_lost_subscription_is_backfilled_from_history_without_resync(
    live: LiveGateway,
    http: httpx.AsyncClient,
    redis: aioredis.Redis,
    publisher: EventPublisher,
    user_id: str,
) -> None:
    async with (
        http.stream("GET", f"{live.url}/events", params={"token": make_token(user_id)}) as sse,
        connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as ws,
    ):
        tab = SseClient(sse)
        assert (await tab.next()).data["event"] == "connected"
        assert (await ws_next(ws))["event"] == "connected"
        published = [await publisher.publish(user_id, class_created(0))]
        reconnects = live.services.mux.statistics().reconnects

        async def keep_publishing() -> None:
            for n in range(1, 40):
                published.append(await publisher.publish(user_id, class_created(n)))
                await asyncio.sleep(0.01)

        publishing = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.1)
        await kill_pubsub(redis)  # events published from now until resubscribed are not live
        await publishing
        await wait_until(lambda: live.services.mux.statistics().reconnects > reconnects)
        sse_ids = [(await tab.next_domain()).data["id"] for _ in published]
        ws_ids = [(await ws_next(ws))["id"] for _ in published]
    assert sse_ids == published  # each once, in order, no resync in between
    assert ws_ids == published


async def test_a_gap_on_a_channel_with_bare_publishes_is_a_resync(
    live: LiveGateway, redis: aioredis.Redis, user_id: str
) -> None:
    legacy = json.dumps(class_created(0))
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as ws:
        assert (await ws_next(ws))["event"] == "connected"
        await redis.publish(f"ws:{user_id}", legacy)
        assert "id" not in await ws_next(ws)
        await kill_pubsub(redis)
        resync = await ws_next(ws, timeout=10)
    assert (resync["event"], resync["reason"]) == ("resync", "redis_reconnected")
    assert resync["cursor"]


# --- maximum connection lifetime ------------------------------------------------------------------


async def test_a_stream_ends_at_its_maximum_lifetime_and_resumes(
    make_settings: SettingsFactory, publisher: EventPublisher, user_id: str
) -> None:
    async with serving(make_settings(max_connection_seconds=1.0)) as live:
        async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
            cursor = (await ws_next(conn))["cursor"]
            code, reason, messages = await ws_close_of(conn, timeout=3)
        assert (code, reason) == (4000, "max_lifetime")
        assert 0 <= messages[-1]["retry_ms"] <= 1000
        event_id = await publisher.publish(user_id, class_created(1))
        url = f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={cursor}"
        async with connect(url) as conn:
            await ws_next(conn)
            assert (await ws_next(conn))["id"] == event_id


async def test_a_redis_restart_with_persistence_is_backfilled_without_resync(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    server = start_redis(args=["--appendonly", "yes", "--appendfsync", "always"])
    try:
        settings = dataclasses.replace(make_settings(), redis_url=Secret(server.url))
        async with (
            serving(settings) as live,
            EventPublisher.from_url(server.url, timeout=1.0) as publisher,
            http.stream("GET", f"{live.url}/events", params={"token": make_token(user_id)}) as sse,
            connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as ws,
        ):
            tab = SseClient(sse)
            assert (await tab.next()).data["event"] == "connected"
            assert (await ws_next(ws))["event"] == "connected"
            published = [await publisher.publish(user_id, class_created(n)) for n in range(3)]
            server.kill()
            server.start()  # the same data directory: the history comes back from the AOF
            for n in range(3, 6):  # published before the gateway has resubscribed
                published.append(await publish_retrying(publisher, user_id, class_created(n)))
            sse_messages = [(await tab.next_domain(timeout=15)).data for _ in published]
            ws_messages = [await ws_next(ws, timeout=15) for _ in published]
        assert [m.get("id") for m in sse_messages] == published  # no resync in between
        assert [m.get("id") for m in ws_messages] == published
    finally:
        server.cleanup()
