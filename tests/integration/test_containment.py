"""Hostile input must not blind a worker, break another user's stream or answer 500.

Each test reproduces one finding of an attack on a running gateway (real Redis, real
Hypercorn on loopback, real upstream stand-ins) and checks the fix.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from events.channels import history_key
from publishers import EventPublisher
from quart_gateway.admission.connection_limit import ConnectionLimiter
from quart_gateway.ops.metrics import Metrics
from tests.servers import LiveGateway, SettingsFactory, serving
from tests.support import (
    Reply,
    SseClient,
    Upstream,
    make_token,
    sse_and_ws,
    ws_close_of,
    ws_next,
)

SURROGATE_SUB = "x\ud800"
NEWLINE_SUB = "user\nforged"


def class_created(n: int) -> dict[str, object]:
    return {"event": "class_created", "class_id": f"c{n}", "class_designation": str(n)}


async def ws_refusal(live: LiveGateway, query: str) -> tuple[int, str]:
    async with connect(f"{live.ws_url}/ws?{query}") as conn:
        code, reason, _ = await ws_close_of(conn)
    return code, reason


async def assert_worker_serves_others(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    """Another user still gets live events on both transports, without resync, and the
    worker is ready."""
    other = f"bystander-{uuid.uuid4().hex[:8]}"
    reconnects = live.services.mux.statistics().reconnects
    async with sse_and_ws(http, live.url, live.ws_url, other) as (tab, ws):
        await redis.publish(f"ws:{other}", json.dumps(class_created(1)))
        assert (await tab.next_domain()).data["class_id"] == "c1"
        assert (await ws_next(ws))["class_id"] == "c1"
    assert live.services.mux.statistics().reconnects == reconnects
    assert (await http.get(f"{live.url}/readyz")).status_code == 200


# --- finding 1: a `sub` that cannot be encoded --------------------------------------------------


@pytest.mark.parametrize("sub", [SURROGATE_SUB, NEWLINE_SUB, " padded", "x" * 256])
async def test_a_sub_outside_the_user_id_rule_is_refused_everywhere(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, sub: str
) -> None:
    token = make_token(sub)
    status = await http.get(
        f"{live.url}/v1/batches/b1/status", headers={"Authorization": f"Bearer {token}"}
    )
    assert status.status_code == 401
    assert status.json()["error"]["code"] == "unauthorized"
    events = await http.get(f"{live.url}/events", params={"token": token})
    assert events.status_code == 401
    assert await ws_refusal(live, f"token={token}") == (1008, "invalid_token")
    await assert_worker_serves_others(live, http, redis)


async def test_the_multiplexer_refuses_a_channel_it_could_not_subscribe(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    with pytest.raises(ValueError, match="user id"):
        async with live.services.mux.subscribe(SURROGATE_SUB):
            pass
    await assert_worker_serves_others(live, http, redis)


async def test_a_command_the_writer_cannot_encode_does_not_restart_the_listener(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    # What a `sub` with a lone surrogate used to queue before admission refused it.
    live.services.mux._send("SUBSCRIBE", f"ws:{SURROGATE_SUB}")
    await assert_worker_serves_others(live, http, redis)
    text = (await http.get(f"{live.url}/metrics")).text
    assert 'gateway_task_failures_total{task="multiplexer-writer"} 1.0' in text


async def test_the_lease_flusher_survives_a_batch_it_cannot_send(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    limiter = ConnectionLimiter(client, 1, Metrics())
    from quart_gateway.aio.supervisor import TaskSupervisor

    tasks = TaskSupervisor()
    limiter.start(tasks)
    try:
        user = f"user-{uuid.uuid4().hex[:8]}"
        # A member Redis cannot be sent fails its batch (fail open), not the flusher.
        assert await asyncio.wait_for(limiter.acquire(SURROGATE_SUB, "m\ud800"), 1.0)
        assert await asyncio.wait_for(limiter.acquire(user, "a"), 1.0)
        assert not await asyncio.wait_for(limiter.acquire(user, "b"), 1.0)  # still enforced
        assert tasks.statistics().down == ()
    finally:
        await tasks.stop()
        await limiter.stop()
        await client.aclose()


# --- finding 2: one bare PUBLISH crashed the listener --------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        '{"event":"class_created","class_id":"c","class_designation":"x","id":"²-1"}'.encode(),
        b'{\n  "event": "class_created",\n  "class_id": "\\ud800",\n  "class_designation": "x"\n}',
        b'{"event":"class_created","class_id":"c","class_designation":NaN}',
        b'{"event":"class_created","class_id":"c","class_designation":"' + b"x" * 300_000 + b'"}',
    ],
    ids=["deep", "superscript-id", "pretty-surrogate", "nan", "oversized"],
)
async def test_a_hostile_publish_never_restarts_the_listener(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str, payload: bytes
) -> None:
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as ws:
        assert (await ws_next(ws))["event"] == "connected"
        await redis.publish(f"ws:{user_id}", payload)
        await redis.publish(f"ws:{user_id}", json.dumps(class_created(2)))
        received = await ws_next(ws)
        if received.get("class_id") != "c2":  # a harmless rendering of the hostile event
            assert received["event"] == "class_created"
            assert "NaN" not in json.dumps(received)
            received = await ws_next(ws)
        assert received["class_id"] == "c2"
    await assert_worker_serves_others(live, http, redis)


# --- finding 3: resume ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id", ["99999999999999999999-0", "\u0661-\u0660", "\u00b2-0", "18446744073709551616-1"]
)
async def test_an_id_redis_would_refuse_gets_resync_and_spares_other_resumes(
    live: LiveGateway, publisher: EventPublisher, user_id: str, bad_id: str
) -> None:
    first = await publisher.publish(user_id, class_created(1))
    await publisher.publish(user_id, class_created(2))

    async def resume(last: str) -> list[dict[str, object]]:
        url = f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={last}"
        async with connect(url) as conn:
            assert (await ws_next(conn))["event"] == "connected"
            return [await ws_next(conn)]

    results = await asyncio.gather(
        *(resume(bad_id) for _ in range(4)), *(resume(first) for _ in range(5))
    )
    for attacker in results[:4]:
        assert attacker[0]["event"] == "resync"
    for honest in results[4:]:
        assert honest[0]["class_id"] == "c2"  # the replay, not a resync


async def test_a_non_ascii_last_event_id_header_gets_resync_not_a_cut_stream(
    live: LiveGateway, user_id: str
) -> None:
    request = (
        f"GET /events?token={make_token(user_id)} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"Last-Event-ID: \xb2-0\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(request)
        await writer.drain()
        seen = b""
        async with asyncio.timeout(5):
            while b"resync" not in seen:
                chunk = await reader.read(4096)
                assert chunk, f"stream ended early: {seen!r}"
                seen += chunk
        assert seen.startswith(b"HTTP/1.1 200")
        assert b'"reason":"history_unavailable"' in seen
    finally:
        writer.close()


async def test_a_superscript_last_event_id_on_sse_gets_resync(
    live: LiveGateway, http: httpx.AsyncClient, user_id: str
) -> None:
    params = {"token": make_token(user_id), "last_event_id": "²-0"}
    async with http.stream("GET", f"{live.url}/events", params=params) as response:
        assert response.status_code == 200
        tab = SseClient(response)
        assert (await tab.next()).data["event"] == "connected"
        assert (await tab.next()).data["event"] == "resync"


# --- finding 4: history replay skipped the live filter ------------------------------------------


async def test_history_entries_pass_the_live_filter_on_replay(
    live: LiveGateway,
    http: httpx.AsyncClient,
    redis: aioredis.Redis,
    publisher: EventPublisher,
    user_id: str,
) -> None:
    first = await publisher.publish(user_id, class_created(1))
    key = history_key(user_id)
    forged = '{\n"event": "class_created", "class_id": "c2", "class_designation": "x"\n}'
    forged += "\n\ndata: {}\nevent: disconnect\nretry: 1\n"
    await redis.xadd(key, {"e": forged})
    await redis.xadd(key, {"e": '{"event":"ping"}'})
    own_id = (
        '{"event":"class_created","class_id":"f","class_designation":"x","id":"9999999999999-0"}'
    )
    await redis.xadd(key, {"e": own_id})  # would move the client's resume position
    await redis.xadd(key, {"e": b"{\xff}"})
    await redis.xadd(key, {"e": "not json"})
    await publisher.publish(user_id, class_created(3))
    params = {"token": make_token(user_id), "last_event_id": first}
    async with http.stream("GET", f"{live.url}/events", params=params) as response:
        tab = SseClient(response)
        assert (await tab.next()).data["event"] == "connected"
        third = await tab.next()
        assert third.data["class_id"] == "c3"  # every injected entry dropped
        assert tab.retry is not None
        assert tab.retry > 1


# --- finding 6: upstream bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id":"OWNER","pipeline_state":' + b"[" * 700 + b"]" * 700 + b"}",
        b'{"user_id":"OWNER","pipeline_state":{"progress":NaN},"last_updated":null}',
        b'{"user_id":"OWNER","pipeline_state":{"progress":Infinity}}',
        b'{"user_id":"OWNER","pipeline_state":"' + b"x" * 2_000_000 + b'"}',
    ],
    ids=["deep", "nan", "infinity", "oversized"],
)
async def test_a_hostile_upstream_body_is_a_503(
    live: LiveGateway, http: httpx.AsyncClient, upstream: Upstream, user_id: str, raw: bytes
) -> None:
    batch = f"b-{uuid.uuid4().hex[:8]}"
    upstream.reply(
        f"/internal/v1/batches/{batch}/status", Reply(raw=raw.replace(b"OWNER", user_id.encode()))
    )
    response = await http.get(
        f"{live.url}/v1/batches/{batch}/status",
        headers={"Authorization": f"Bearer {make_token(user_id)}"},
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"


# --- finding 7: an `exp` beyond any float --------------------------------------------------------


async def test_an_exp_beyond_any_timestamp_is_a_401_everywhere(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    token = make_token("user-exp", exp=10**400)
    status = await http.get(
        f"{live.url}/v1/batches/b1/status", headers={"Authorization": f"Bearer {token}"}
    )
    assert status.status_code == 401
    events = await http.get(f"{live.url}/events", params={"token": token})
    assert events.status_code == 401
    assert events.json()["error"]["code"] == "unauthorized"
    assert await ws_refusal(live, f"token={token}") == (1008, "invalid_token")
    await assert_worker_serves_others(live, http, redis)


# --- finding 9: double slashes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1//batches/b1/status", 404), ("//v1/batches/b1/status", 401), ("//events", 404)],
)
async def test_a_double_slash_is_never_a_redirect_to_the_host_header(
    live: LiveGateway, http: httpx.AsyncClient, path: str, status: int
) -> None:
    # Werkzeug ignores leading slashes when matching (`//v1/...` is the status route, which
    # wants a token) and redirected inner ones to an absolute URL built from `Host`.
    response = await http.get(f"{live.url}{path}", headers={"Host": "evil.example"})
    assert response.status_code == status
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] in ("not_found", "unauthorized")


async def test_the_connection_limit_holds_after_hostile_tokens(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with serving(make_settings(max_connections_per_user=2)) as live:
        for sub in (SURROGATE_SUB, NEWLINE_SUB):
            await http.get(f"{live.url}/events", params={"token": make_token(sub)})
        token = make_token(user_id)
        async with (
            http.stream("GET", f"{live.url}/events", params={"token": token}) as one,
            http.stream("GET", f"{live.url}/events", params={"token": token}) as two,
        ):
            assert (one.status_code, two.status_code) == (200, 200)
            third = await http.get(f"{live.url}/events", params={"token": token})
            assert third.status_code == 429
