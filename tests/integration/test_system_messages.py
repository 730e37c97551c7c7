"""Every system message the gateway sends, captured from live streams on both transports, is
exactly its model in `events.catalog`: it validates, and it has no field the model lacks.

`Event` models allow extra fields (publishers may be newer than the gateway), so validation
alone would let a stray field through; the key sets are compared as well.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

import events
from tests.servers import LiveGateway, SettingsFactory, serving
from tests.support import SseClient, make_token, ws_close_of

MODELS: dict[str, type[events.Event]] = {
    "connected": events.Connected,
    "ping": events.Ping,
    "resync": events.Resync,
    "disconnect": events.Disconnect,
}
HEARTBEAT = 0.2


def valid(message: dict[str, Any]) -> events.Event:
    """`message` parsed as its system model: the model's fields only (no history id), every
    required one present (optional ones, such as `cursor` or `retry_ms`, only when set)."""
    model = MODELS[message["event"]]
    parsed = events.parse_event(message)
    assert type(parsed) is model
    assert parsed.model_extra == {}
    assert set(message) <= set(model.model_fields) - {"id"}, message
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required <= set(message), message
    return parsed


def query(token: str, **params: str) -> str:
    return urlencode({"token": token, **params})


@asynccontextmanager
async def sse(http: httpx.AsyncClient, live: LiveGateway, qs: str) -> AsyncIterator[SseClient]:
    async with http.stream("GET", f"{live.url}/events?{qs}") as response:
        assert response.status_code == 200
        yield SseClient(response)


async def sse_until(client: SseClient, event: str, **fields: Any) -> list[dict[str, Any]]:
    """Messages up to and including the first `event` with `fields`."""
    seen = []
    while True:
        message = (await client.next(timeout=10)).data
        seen.append(message)
        if message["event"] == event and message == {**message, **fields}:
            return seen


async def ws_until(conn: ClientConnection, event: str, **fields: Any) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await conn.recv())
            seen.append(message)
            if message["event"] == event and message == {**message, **fields}:
                return seen


async def kill_pubsub(redis_url: str) -> None:
    """Drop the gateway's pub/sub connection, as a Redis restart or network cut would."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        for info in await client.client_list():
            if info.get("name") == "gateway-pubsub":
                await client.client_kill_filter(_id=info["id"])
    finally:
        await client.aclose()


async def test_connected_resync_and_ping_on_both_transports(
    make_settings: SettingsFactory,
    http: httpx.AsyncClient,
    redis: aioredis.Redis,
    redis_url: str,
    user_id: str,
) -> None:
    resume = query(make_token(user_id), last_event_id="garbage")  # an id never issued: resync
    async with (
        serving(make_settings(heartbeat_interval_seconds=HEARTBEAT)) as live,
        sse(http, live, resume) as tab,
        connect(f"{live.ws_url}/ws?{resume}") as sock,
    ):
        streams = {
            "sse": await sse_until(tab, "ping"),
            "ws": await ws_until(sock, "ping"),
        }
        # A bare PUBLISH makes the channel one that history cannot backfill: a gap is a resync.
        legacy = '{"event":"class_created","class_id":"c","class_designation":"x"}'
        await redis.publish(f"ws:{user_id}", legacy)
        streams["sse"] += await sse_until(tab, "class_created")
        streams["ws"] += await ws_until(sock, "class_created")
        await kill_pubsub(redis_url)
        streams["sse"] += await sse_until(tab, "resync", reason="redis_reconnected")
        streams["ws"] += await ws_until(sock, "resync", reason="redis_reconnected")
        streams["sse"] += await sse_until(tab, "ping")
        streams["ws"] += await ws_until(sock, "ping")

    for transport, messages in streams.items():
        parsed = [valid(m) for m in messages if m["event"] in MODELS]
        connected, resync = parsed[:2]
        assert isinstance(connected, events.Connected)
        assert (connected.transport, connected.heartbeat_interval) == (transport, HEARTBEAT)
        assert isinstance(resync, events.Resync)
        assert resync.reason == "history_unavailable"
        kinds = {(m.event, getattr(m, "reason", None)) for m in parsed}
        assert kinds == {
            ("connected", None),
            ("ping", None),
            ("resync", "history_unavailable"),
            ("resync", "redis_reconnected"),
        }


async def test_disconnect_on_both_transports(
    live: LiveGateway, http: httpx.AsyncClient, user_id: str
) -> None:
    expiring = query(make_token(user_id, expires_in=1.5))

    async def sse_ending() -> list[dict[str, Any]]:
        async with sse(http, live, expiring) as tab:
            return [e.data for e in await tab.until_end(timeout=10)]

    async def ws_ending(qs: str) -> tuple[int, list[dict[str, Any]]]:
        async with connect(f"{live.ws_url}/ws?{qs}") as conn:
            code, _, messages = await ws_close_of(conn, timeout=10)
        return code, messages

    sse_messages, (ws_code, ws_messages), (refused_code, refused) = await asyncio.gather(
        sse_ending(), ws_ending(expiring), ws_ending(query("garbage"))
    )

    for messages, code in ((sse_messages, 4002), (ws_messages, 4002), (refused, 1008)):
        parsed = [valid(m) for m in messages]
        farewell = parsed[-1]
        assert isinstance(farewell, events.Disconnect)
        assert farewell.code == code
        assert all(m.event != "disconnect" for m in parsed[:-1])
    assert (ws_code, refused_code) == (4002, 1008)
    assert sse_messages[-1]["reason"] == "token_expired"
    assert refused[-1]["reason"] == "invalid_token"
