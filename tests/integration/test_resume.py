"""Loss-free resume across reconnects: Last-Event-ID / ?last_event_id= on both transports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

import events
from publishers import EventPublisher
from tests.servers import LiveGateway
from tests.support import SseClient, make_token, ws_next


def numbered(n: int) -> events.Event:
    return events.ClassUpdated(class_id=str(n), class_designation=f"v{n}")


async def sse_messages(
    http: httpx.AsyncClient,
    live: LiveGateway,
    user: str,
    count: int,
    headers: dict[str, str] | None = None,
    **params: str,
) -> list[tuple[dict[str, Any], str | None]]:
    """Open /events, return the first `count` non-ping messages with their SSE ids."""
    query = {"token": make_token(user), **params}
    async with http.stream(
        "GET", f"{live.url}/events", params=query, headers=headers or {}
    ) as response:
        client = SseClient(response)
        out = []
        for _ in range(count):
            event = await client.next_domain()
            out.append((event.data, event.id))
        return out


async def test_sse_resumes_with_last_event_id(
    live: LiveGateway, http: httpx.AsyncClient, publisher: EventPublisher, user_id: str
) -> None:
    first_id = await publisher.publish(user_id, numbered(0))
    missed = [await publisher.publish(user_id, numbered(n)) for n in (1, 2, 3)]
    query = {"token": make_token(user_id)}
    async with http.stream(
        "GET", f"{live.url}/events", params=query, headers={"Last-Event-ID": first_id}
    ) as response:
        client = SseClient(response)
        assert (await client.next()).data["event"] == "connected"
        replayed = [await client.next_domain() for _ in range(3)]
        assert [e.id for e in replayed] == missed
        assert [e.data["class_id"] for e in replayed] == ["1", "2", "3"]
        assert [e.data["id"] for e in replayed] == missed  # the id is in the JSON too
        live_id = await publisher.publish(user_id, numbered(4))
        after = await client.next_domain()
        assert (after.id, after.data["class_id"]) == (live_id, "4")


async def test_sse_resume_by_query_parameter(
    live: LiveGateway, http: httpx.AsyncClient, publisher: EventPublisher, user_id: str
) -> None:
    first_id = await publisher.publish(user_id, numbered(0))
    second_id = await publisher.publish(user_id, numbered(1))
    messages = await sse_messages(http, live, user_id, 2, last_event_id=first_id)
    assert messages[0][0]["event"] == "connected"
    assert messages[1][1] == second_id


async def test_ws_resumes_with_last_event_id(
    live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    first_id = await publisher.publish(user_id, numbered(0))
    missed = [await publisher.publish(user_id, numbered(n)) for n in (1, 2, 3)]
    async with connect(
        f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={first_id}"
    ) as conn:
        assert (await ws_next(conn))["event"] == "connected"
        assert [(await ws_next(conn))["id"] for _ in range(3)] == missed
        live_id = await publisher.publish(user_id, numbered(4))
        assert (await ws_next(conn))["id"] == live_id


async def test_nothing_missed_means_nothing_replayed(
    live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    last = await publisher.publish(user_id, numbered(0))
    async with connect(
        f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={last}"
    ) as conn:
        assert (await ws_next(conn))["event"] == "connected"
        new = await publisher.publish(user_id, numbered(1))
        assert (await ws_next(conn))["id"] == new


@pytest.mark.parametrize("last_event_id", ["garbage", "1-", "99999999999999-0"])
async def test_unknown_id_gets_resync_then_live(
    live: LiveGateway, publisher: EventPublisher, user_id: str, last_event_id: str
) -> None:
    await publisher.publish(user_id, numbered(0))
    async with connect(
        f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={last_event_id}"
    ) as conn:
        assert (await ws_next(conn))["event"] == "connected"
        resync = await ws_next(conn)
        assert (resync["event"], resync["reason"]) == ("resync", "history_unavailable")
        new = await publisher.publish(user_id, numbered(1))
        assert (await ws_next(conn))["id"] == new


async def test_trimmed_history_gets_resync(
    live: LiveGateway, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    async with EventPublisher.from_url(redis_url, history_max_events=3) as short:
        first = await short.publish(user_id, numbered(0))
        for n in range(1, 10):
            await short.publish(user_id, numbered(n))
    messages = await sse_messages(http, live, user_id, 2, headers={"Last-Event-ID": first})
    assert messages[0][0]["event"] == "connected"
    assert messages[1][0] == {**messages[1][0], "event": "resync", "reason": "history_unavailable"}


async def test_expired_history_gets_resync(
    live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    async with connect(
        f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id=1700000000000-0"
    ) as conn:
        assert (await ws_next(conn))["event"] == "connected"
        assert (await ws_next(conn))["event"] == "resync"  # no history stream at all


async def test_legacy_bare_publish_is_live_only(
    live: LiveGateway, publisher: EventPublisher, redis_url: str, user_id: str
) -> None:
    first = await publisher.publish(user_id, numbered(0))
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.publish(
            f"ws:{user_id}",
            json.dumps({"event": "class_created", "class_id": "legacy", "class_designation": "x"}),
        )
        async with connect(
            f"{live.ws_url}/ws?token={make_token(user_id)}&last_event_id={first}"
        ) as conn:
            assert (await ws_next(conn))["event"] == "connected"
            await raw.publish(
                f"ws:{user_id}",
                json.dumps(
                    {"event": "class_created", "class_id": "legacy-live", "class_designation": "x"}
                ),
            )
            message = await ws_next(conn)  # the earlier legacy event is not replayed
            assert message["class_id"] == "legacy-live"
            assert "id" not in message
    finally:
        await raw.aclose()


async def test_reconnecting_under_load_loses_and_duplicates_nothing(
    live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    """Events keep flowing while the client disconnects and resumes, several times; the
    client sees every event exactly once, in order (live subscribe, then history, then dedupe)."""
    total = 300
    published: list[str] = []

    async def produce() -> None:
        for n in range(total):
            published.append(await publisher.publish(user_id, numbered(n)))
            await asyncio.sleep(0.002)

    seen: list[str] = []
    producer: asyncio.Task[None] | None = None
    last: str | None = None
    while len(seen) < total:
        query = f"token={make_token(user_id)}" + (f"&last_event_id={last}" if last else "")
        async with connect(f"{live.ws_url}/ws?{query}") as conn:
            assert (await ws_next(conn))["event"] == "connected"
            if producer is None:  # from here on, nothing may be missed
                producer = asyncio.create_task(produce())
            for _ in range(40):
                message = await ws_next(conn, timeout=10)
                assert message["event"] == "class_updated", message
                seen.append(message["id"])
                last = message["id"]
                if len(seen) == total:
                    break
    assert producer is not None
    await producer
    assert seen == published


async def test_concurrent_resumes_share_redis_round_trips(
    live: LiveGateway, publisher: EventPublisher, redis_url: str, user_id: str
) -> None:
    users = [f"{user_id}-{i}" for i in range(200)]
    first_ids = [await publisher.publish(u, numbered(0)) for u in users]
    for u in users:
        await publisher.publish(u, numbered(1))
    raw = aioredis.Redis.from_url(redis_url)

    async def scripts_run() -> int:
        stats = await raw.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await scripts_run()
    replays = await asyncio.gather(
        *(live.services.history.since(u, i) for u, i in zip(users, first_ids, strict=True))
    )
    after = await scripts_run()
    await raw.aclose()
    assert all(len(r.frames) == 1 and r.gap is None for r in replays)
    assert after - before <= 200 // 50 + 2  # batches of up to 50, not one call per client
