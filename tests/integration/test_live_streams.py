"""/ws and /events served by Hypercorn in-process, fed by a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from events import DOMAIN_EVENT_TYPES
from tests.servers import LiveGateway, SettingsFactory, serving
from tests.support import SseClient, make_token, wait_until, ws_close_of, ws_next


@pytest.fixture(name="redis")
async def _redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@asynccontextmanager
async def sse(
    http: httpx.AsyncClient, live: LiveGateway, user: str, **params: str
) -> AsyncIterator[SseClient]:
    query = {"token": make_token(user), **params}
    async with http.stream("GET", f"{live.url}/events", params=query) as response:
        assert response.status_code == 200, await response.aread()
        client = SseClient(response)
        first = await client.next()
        assert first.data["event"] == "connected"
        yield client


@asynccontextmanager
async def ws(
    live: LiveGateway, user: str, path: str = "/ws", **params: str
) -> AsyncIterator[ClientConnection]:
    query = "&".join(f"{k}={v}" for k, v in {"token": make_token(user), **params}.items())
    async with connect(f"{live.ws_url}{path}?{query}") as conn:
        first = await ws_next(conn)
        assert first["event"] == "connected"
        yield conn


def event(n: int, kind: str = "class_created") -> str:
    return json.dumps({"event": kind, "class_id": f"c{n}", "class_designation": f"{n}", "n": n})


async def test_sse_delivers_published_events(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    async with http.stream(
        "GET", f"{live.url}/events", headers={"Authorization": f"Bearer {make_token(user_id)}"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-cache")
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        client = SseClient(response)
        connected = await client.next()
        assert connected.data["event"] == "connected"
        assert connected.data["transport"] == "sse"
        assert client.retry is not None
        assert client.comments
        assert await redis.publish(f"ws:{user_id}", event(1)) == 1
        received = await client.next_domain()
        assert received.data == json.loads(event(1))
        assert received.id is None


async def test_ws_delivers_published_events_on_both_paths(
    live: LiveGateway, redis: aioredis.Redis, user_id: str
) -> None:
    for path in ("/ws", "/ws/"):
        async with ws(live, user_id, path) as conn:
            await redis.publish(f"ws:{user_id}", event(1))
            assert await ws_next(conn) == json.loads(event(1))


async def test_users_only_see_their_own_events(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    other = user_id + "-other"
    async with sse(http, live, user_id) as mine, ws(live, user_id) as mine_ws:
        await redis.publish(f"ws:{other}", event(666))
        await redis.publish(f"ws:{user_id}", event(1))
        assert (await mine.next_domain()).data["n"] == 1
        assert (await ws_next(mine_ws))["n"] == 1


async def test_every_connection_gets_every_event_once_in_order(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    async with AsyncExitStack() as stack:
        tabs = [await stack.enter_async_context(sse(http, live, user_id)) for _ in range(2)]
        sockets = [await stack.enter_async_context(ws(live, user_id)) for _ in range(2)]
        for n in range(20):
            await redis.publish(f"ws:{user_id}", event(n))
        await redis.publish(f"ws:{user_id}", event(999, "class_updated"))  # end marker
        for tab in tabs:
            seen = []
            while True:
                data = (await tab.next_domain()).data
                if data["event"] == "class_updated":
                    break
                seen.append(data["n"])
            assert seen == list(range(20))
        for sock in sockets:
            seen = []
            while True:
                data = await ws_next(sock)
                if data["event"] == "class_updated":
                    break
                seen.append(data["n"])
            assert seen == list(range(20))


async def test_all_origin_types_pass_and_invalid_messages_are_dropped(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    channel = f"ws:{user_id}"
    async with sse(http, live, user_id) as tab, ws(live, user_id) as sock:
        for junk in (
            b"not json",
            b"[1,2]",
            b'"str"',
            b"{}",
            b'{"event":"unknown"}',
            b"\xff\xfe",
            b'{"event":"ping"}',
        ):
            await redis.publish(channel, junk)
        for kind in sorted(DOMAIN_EVENT_TYPES):
            await redis.publish(channel, json.dumps({"event": kind, "batch_id": "b"}))
        legacy = json.dumps({"event": "batch_phase_concluded", "data": {"batch_id": "b"}})
        await redis.publish(channel, legacy)
        expected = [*sorted(DOMAIN_EVENT_TYPES), "batch_phase_concluded"]
        assert [(await tab.next_domain()).data["event"] for _ in expected] == expected
        assert [(await ws_next(sock))["event"] for _ in expected] == expected
    metrics = (await http.get(f"{live.url}/metrics")).text
    for reason in ("not_json", "not_object", "unknown_event", "not_utf8"):
        assert f'gateway_events_dropped_total{{reason="{reason}"}}' in metrics


async def test_heartbeat_on_both_transports(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    settings = make_settings(heartbeat_interval_seconds=0.2)
    async with (
        serving(settings) as live,
        sse(http, live, user_id) as tab,
        ws(live, user_id) as sock,
    ):
        ping = (await tab.next(timeout=2)).data
        assert ping["event"] == "ping"
        assert "timestamp" in ping
        ws_ping = await ws_next(sock, timeout=2, skip_pings=False)
        assert ws_ping["event"] == "ping"
        assert "timestamp" in ws_ping
        await sock.send("ping")  # a client ping must not end the session
        await sock.ping()
        assert (await ws_next(sock, timeout=2, skip_pings=False))["event"] == "ping"


BAD_TOKENS = {
    "missing": None,
    "garbage": "garbage",
    "expired": make_token("u", expires_in=-60),
    "wrong-key": make_token("u", key="a-different-key-that-is-long-enough-for-hs256!"),
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_sse_bad_tokens_get_401_before_streaming(
    live: LiveGateway, http: httpx.AsyncClient, token: str | None
) -> None:
    params = {"token": token} if token else {}
    response = await http.get(f"{live.url}/events", params=params)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    metrics = (await http.get(f"{live.url}/metrics")).text
    assert 'gateway_connections_rejected_total{reason="invalid_token",transport="sse"}' in metrics


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_ws_bad_tokens_are_closed_with_1008(live: LiveGateway, token: str | None) -> None:
    url = f"{live.ws_url}/ws" + (f"?token={token}" if token else "")
    async with connect(url) as conn:
        code, reason, messages = await ws_close_of(conn)
    assert (code, reason) == (1008, "invalid_token")
    assert messages[-1]["event"] == "disconnect"
    assert messages[-1]["reconnect"] is False


async def test_one_redis_subscription_for_many_connections(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    users = [f"{user_id}-{i}" for i in range(10)]
    async with AsyncExitStack() as stack:
        for i in range(100):
            user = users[i % 10]
            if i % 2:
                await stack.enter_async_context(ws(live, user))
            else:
                await stack.enter_async_context(sse(http, live, user))
        clients = await redis.client_list()
        pubsub = [c for c in clients if c.get("name") == "gateway-pubsub"]
        assert len(pubsub) == 1
        gateway_conns = [c for c in clients if c.get("name", "").startswith("gateway")]
        assert len(gateway_conns) <= 2 + 1  # pub/sub + command pool (+1 for a request in flight)
        numsub = dict(await redis.pubsub_numsub(*[f"ws:{u}" for u in users]))
        assert all(count == 1 for count in numsub.values())
        assert live.services.mux.statistics().subscribers == 100

    # The last connection of each user gone: the channel is unsubscribed.
    async def unsubscribed() -> bool:
        counts = dict(await redis.pubsub_numsub(*[f"ws:{u}" for u in users]))
        return all(count == 0 for count in counts.values())

    await wait_until(unsubscribed)
    assert live.services.mux.statistics().channels == 0


async def test_connection_limit(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with serving(make_settings(max_connections_per_user=2)) as live:
        async with sse(http, live, user_id), ws(live, user_id) as first_ws:
            refused = await http.get(f"{live.url}/events", params={"token": make_token(user_id)})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_connections"
            assert "Retry-After" in refused.headers
            async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as extra:
                code, reason, _ = await ws_close_of(extra)
            assert (code, reason) == (4029, "too_many_connections")
            async with ws(live, user_id + "-other"):
                pass  # other users are not affected
            await first_ws.close()

        # Leases are given back: a new connection is accepted again.
        async def admitted() -> bool:
            async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as again:
                return (await ws_next(again))["event"] == "connected"

        await wait_until(admitted)


async def test_stream_ends_when_the_token_expires(
    live: LiveGateway, http: httpx.AsyncClient, user_id: str
) -> None:
    token = make_token(user_id, expires_in=1.5)
    async with http.stream("GET", f"{live.url}/events", params={"token": token}) as response:
        client = SseClient(response)
        events = await client.until_end(timeout=5)
    last = events[-1].data
    assert (last["event"], last["code"], last["reason"], last["reconnect"]) == (
        "disconnect",
        4002,
        "token_expired",
        True,
    )
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id, expires_in=1.5)}") as conn:
        code, reason, _ = await ws_close_of(conn, timeout=5)
    assert (code, reason) == (4002, "token_expired")


async def test_draining_closes_streams_cleanly(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with (
        serving(make_settings()) as live,
        sse(http, live, user_id) as tab,
        ws(live, user_id) as sock,
    ):
        live.services.lifecycle.start_draining()
        code, reason, _ = await ws_close_of(sock)
        assert (code, reason) == (1012, "server_restart")
        events = await tab.until_end()
        assert events[-1].data["reason"] == "server_restart"
        assert events[-1].retry is not None
        assert events[-1].retry >= 500
        # New streams while draining: 200, a retry hint, and an immediate end. Never 5xx.
        async with http.stream(
            "GET", f"{live.url}/events", params={"token": make_token(user_id)}
        ) as late:
            assert late.status_code == 200
            assert (await SseClient(late).until_end())[-1].data["code"] == 1012
        ready = await http.get(f"{live.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["draining"] is True


async def test_cors_preflight_and_origin_checks(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    allowed = "http://localhost:5173"
    async with serving(make_settings(cors_origins=(allowed,))) as live:
        preflight = await http.options(
            f"{live.url}/events",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        allow_headers = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allow_headers
        assert "last-event-id" in allow_headers
        status = await http.get(f"{live.url}/v1/batches/b/status", headers={"Origin": allowed})
        assert status.headers["access-control-allow-origin"] == allowed
        foreign = await http.get(f"{live.url}/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in foreign.headers
        async with connect(
            f"{live.ws_url}/ws?token={make_token(user_id)}", origin="https://evil.example"
        ) as conn:  # type: ignore[arg-type]
            code, reason, _ = await ws_close_of(conn)
        assert (code, reason) == (1008, "origin_not_allowed")
        async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}", origin=allowed) as conn:  # type: ignore[arg-type]
            assert (await ws_next(conn))["event"] == "connected"


async def test_metrics_and_readiness(
    live: LiveGateway, http: httpx.AsyncClient, user_id: str
) -> None:
    async with ws(live, user_id):
        text = (await http.get(f"{live.url}/metrics")).text
    for name in (
        'gateway_connections{transport="ws"} 1.0',
        "gateway_events_delivered_total",
        "gateway_slow_consumer_disconnects_total",
        "gateway_redis_reconnects_total",
        "gateway_listener_seconds_since_heard",
    ):
        assert name in text
    ready = (await http.get(f"{live.url}/readyz")).json()
    assert ready == {
        "status": "ready",
        "redis": True,
        "listener": True,
        "draining": False,
        "tasks_down": [],
    }


async def test_websocket_compression_is_declined_unless_enabled(
    make_settings: SettingsFactory, user_id: str
) -> None:
    url_of = lambda live: f"{live.ws_url}/ws?token={make_token(user_id)}"  # noqa: E731
    async with (
        serving(make_settings()) as live,
        connect(url_of(live), compression="deflate") as conn,
    ):
        assert conn.response is not None
        assert "sec-websocket-extensions" not in conn.response.headers
        assert (await ws_next(conn))["event"] == "connected"
    async with (
        serving(make_settings(ws_compression=True)) as live,
        connect(url_of(live), compression="deflate") as conn,
    ):
        assert conn.response is not None
        assert "permessage-deflate" in conn.response.headers["sec-websocket-extensions"]
        assert (await ws_next(conn))["event"] == "connected"


async def test_head_events_is_405_and_streams_need_a_running_gateway(
    make_settings: SettingsFactory, live: LiveGateway, http: httpx.AsyncClient
) -> None:
    head = await http.head(f"{live.url}/events")
    assert head.status_code == 405
    from quart_gateway.app import create_app

    idle = create_app(make_settings())  # built, not serving: no lifespan, no Redis
    response = await idle.test_client().get("/events")
    assert response.status_code == 503
    assert (await response.get_json())["error"]["code"] == "streams_unavailable"


async def test_a_stream_leaves_nothing_behind_however_it_ends(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    """Admitted, refused and abandoned streams on both transports: once they are gone, no
    subscriber, lease, gauge or drain count is left of them."""

    async def metric(name: str) -> float:
        text = (await http.get(f"{live.url}/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)
        )

    async with serving(make_settings(max_connections_per_user=1)) as live:
        async with ws(live, user_id) as held:
            refused = await http.get(f"{live.url}/events", params={"token": make_token(user_id)})
            assert refused.status_code == 429
            assert await metric("gateway_connections{") == 1
            await held.close()
        async with sse(http, live, user_id + "-sse"):
            assert await metric("gateway_connections{") == 1
        # The connection of a client that goes away without a close frame.
        abandoned = await connect(f"{live.ws_url}/ws?token={make_token(user_id)}")
        assert (await ws_next(abandoned))["event"] == "connected"
        abandoned.transport.abort()

        async def settled() -> bool:
            return (
                live.services.mux.statistics().subscribers == 0
                and await metric("gateway_connections{") == 0
            )

        await wait_until(settled)
        assert live.services.mux.statistics().channels == 0
        assert await live.services.lifecycle.wait_drained(0.1)  # no stream counted open
        # Everything was given back: the user's one allowed connection is free again.
        async with ws(live, user_id), sse(http, live, user_id + "-sse"):
            assert await metric("gateway_connections{") == 2


async def test_a_stream_whose_set_up_fails_after_subscribing_is_undone(
    live: LiveGateway, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure between registering with the multiplexer and streaming (here the stream's
    timers) must not leave the subscription, the gauge or the drain count behind."""
    import quart_gateway.streams.session as session

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("timers unavailable")

    monkeypatch.setattr(session, "StreamGuard", broken)
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
        with pytest.raises(ConnectionClosed):
            await ws_next(conn)
    monkeypatch.undo()
    await wait_until(lambda: live.services.mux.statistics().subscribers == 0)
    assert live.services.mux.statistics().channels == 0
    assert await live.services.lifecycle.wait_drained(0.1)
    async with ws(live, user_id):  # and the user's lease is free again
        assert live.services.mux.statistics().subscribers == 1
