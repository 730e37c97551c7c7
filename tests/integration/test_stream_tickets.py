"""Stream tickets against real gateways and a real Redis: `POST /v1/stream-tickets`, then
`/ws?ticket=` and `/events?ticket=`, once, within the ticket's lifetime, on any host; the
stream ends at the JWT's `exp`; `ALLOW_QUERY_TOKENS=false` refuses `?token=`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from quart_gateway.admission.tickets import ticket_key
from quart_gateway.settings import RateLimit
from tests.servers import LiveGateway, SettingsFactory, serving
from tests.support import SseClient, make_token, publish, ws_close_of, ws_next


async def issue(http: httpx.AsyncClient, gateway: LiveGateway, token: str) -> dict[str, Any]:
    response = await http.post(
        f"{gateway.url}/v1/stream-tickets", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def sse_status(http: httpx.AsyncClient, url: str, **params: str) -> int:
    """The status of an /events request; a 200 stream is read up to `connected`."""
    async with http.stream("GET", url, params=params) as response:
        if response.status_code == 200:
            assert (await SseClient(response).next()).data["event"] == "connected"
        return response.status_code


async def ws_first(url: str) -> dict[str, Any]:
    async with connect(url) as conn:
        return await ws_next(conn)


async def test_a_ticket_opens_one_stream_of_the_token_user(
    live: LiveGateway, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    body = await issue(http, live, make_token(user_id))
    assert body["expires_in"] == 30
    assert len(body["ticket"]) >= 40
    async with http.stream("GET", f"{live.url}/events", params={"ticket": body["ticket"]}) as r:
        assert r.status_code == 200
        sse = SseClient(r)
        assert (await sse.next()).data["event"] == "connected"
        ids = await publish(redis_url, user_id, 1, 1)
        event = await sse.next_domain()
        assert event.id == ids[0]
    # Spent: the same ticket again is refused like a bad token, on both transports.
    assert await sse_status(http, f"{live.url}/events", ticket=body["ticket"]) == 401
    async with connect(f"{live.ws_url}/ws?ticket={body['ticket']}") as conn:
        code, reason, messages = await ws_close_of(conn)
    assert (code, reason) == (1008, "invalid_token")
    assert messages[-1]["reason"] == "invalid_token"


async def test_a_ticket_works_over_websocket_and_resumes_with_last_event_id(
    live: LiveGateway, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    first, second = await publish(redis_url, user_id, 2, 1)
    ticket = (await issue(http, live, make_token(user_id)))["ticket"]
    async with connect(f"{live.ws_url}/ws?ticket={ticket}&last_event_id={first}") as conn:
        connected = await ws_next(conn)
        assert connected["event"] == "connected"
        assert connected["cursor"] == first
        assert (await ws_next(conn))["id"] == second


async def test_two_concurrent_uses_of_one_ticket_exactly_one_wins(
    live: LiveGateway, http: httpx.AsyncClient, user_id: str
) -> None:
    for _ in range(5):
        ticket = (await issue(http, live, make_token(user_id)))["ticket"]
        url = f"{live.url}/events"
        statuses = await asyncio.gather(
            sse_status(http, url, ticket=ticket), sse_status(http, url, ticket=ticket)
        )
        assert sorted(statuses) == [200, 401]


async def test_a_ticket_issued_on_one_host_works_once_on_another(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with serving(make_settings()) as one, serving(make_settings()) as other:
        ticket = (await issue(http, one, make_token(user_id)))["ticket"]
        assert (await ws_first(f"{other.ws_url}/ws?ticket={ticket}"))["event"] == "connected"
        async with connect(f"{one.ws_url}/ws?ticket={ticket}") as conn:
            assert (await ws_close_of(conn))[:2] == (1008, "invalid_token")
        assert await sse_status(http, f"{other.url}/events", ticket=ticket) == 401


async def test_an_expired_ticket_is_refused(
    make_settings: SettingsFactory, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    async with serving(make_settings(stream_ticket_ttl_seconds=1)) as gateway:
        body = await issue(http, gateway, make_token(user_id))
        assert body["expires_in"] == 1
        assert 0 < await redis.pttl(ticket_key(body["ticket"])) <= 1000
        await asyncio.sleep(1.2)
        assert await sse_status(http, f"{gateway.url}/events", ticket=body["ticket"]) == 401


async def test_unknown_and_malformed_tickets_are_refused_like_a_bad_token(
    live: LiveGateway, http: httpx.AsyncClient
) -> None:
    for ticket in ("not-a-ticket", "x" * 5000, ""):
        response = await http.get(f"{live.url}/events", params={"ticket": ticket})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


async def test_the_ticket_lives_no_longer_than_the_token_and_the_stream_ends_at_its_exp(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, user_id: str
) -> None:
    token = make_token(user_id, expires_in=2)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    body = await issue(http, live, token)
    assert body["expires_in"] <= 2
    async with connect(f"{live.ws_url}/ws?ticket={body['ticket']}") as conn:
        assert (await ws_next(conn))["event"] == "connected"
        code, reason, _ = await ws_close_of(conn, timeout=5)
        ended = time.time()
    assert (code, reason) == (4002, "token_expired")
    assert exp - 6 <= ended <= exp + 1


async def test_issuing_needs_a_valid_bearer_token_and_is_rate_limited(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    settings = make_settings(stream_ticket_rate_limit=RateLimit(limit=2, period_s=60))
    async with serving(settings) as gateway:
        url = f"{gateway.url}/v1/stream-tickets"
        assert (await http.post(url)).status_code == 401
        bad = make_token(user_id, key="not-the-gateway-key-0123456789abcdef0123456789")
        assert (await http.post(url, headers={"Authorization": f"Bearer {bad}"})).status_code == 401
        # A token in the query does not count: the point is to keep it out of URLs.
        assert (await http.post(url, params={"token": make_token(user_id)})).status_code == 401
        token = make_token(user_id)
        await issue(http, gateway, token)
        await issue(http, gateway, token)
        refused = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        # Another user has a budget of their own.
        await issue(http, gateway, make_token(f"{user_id}-other"))


@pytest.mark.parametrize("allow", [True, False])
async def test_allow_query_tokens_decides_whether_a_token_in_the_url_works(
    allow: bool, make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with serving(make_settings(allow_query_tokens=allow)) as gateway:
        token = make_token(user_id)
        status = await sse_status(http, f"{gateway.url}/events", token=token)
        assert status == (200 if allow else 401)
        async with connect(f"{gateway.ws_url}/ws?token={token}") as conn:
            first = await ws_next(conn)
        assert first["event"] == ("connected" if allow else "disconnect")
        if not allow:
            assert first["reason"] == "invalid_token"
        # The header and tickets work either way.
        headers = {"Authorization": f"Bearer {token}"}
        async with http.stream("GET", f"{gateway.url}/events", headers=headers) as response:
            assert response.status_code == 200
        ticket = (await issue(http, gateway, token))["ticket"]
        assert await sse_status(http, f"{gateway.url}/events", ticket=ticket) == 200
