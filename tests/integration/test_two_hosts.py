"""Two gateway instances on one Redis, as two dynos: fan-out to a user connected to both, the
per-user connection limit across both, and a resume on one host of what the other delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from websockets.asyncio.client import connect

import events
from publishers import EventPublisher
from tests.integration.test_live_streams import sse
from tests.servers import LiveGateway, SettingsFactory, serving
from tests.support import make_token, wait_until, ws_close_of, ws_next


@asynccontextmanager
async def two_hosts(
    make_settings: SettingsFactory, **overrides: object
) -> AsyncIterator[tuple[LiveGateway, LiveGateway]]:
    async with serving(make_settings(**overrides)) as a, serving(make_settings(**overrides)) as b:
        assert a.port != b.port
        yield a, b


def numbered(n: int) -> events.Event:
    return events.ClassUpdated(class_id=str(n), class_designation=f"v{n}")


async def test_a_user_on_both_hosts_gets_every_event_on_both(
    make_settings: SettingsFactory,
    http: httpx.AsyncClient,
    publisher: EventPublisher,
    user_id: str,
) -> None:
    async with (
        two_hosts(make_settings) as (a, b),
        sse(http, a, user_id) as on_a,
        connect(f"{b.ws_url}/ws?token={make_token(user_id)}") as on_b,
    ):
        assert (await ws_next(on_b))["event"] == "connected"
        ids = [await publisher.publish(user_id, numbered(n)) for n in range(3)]
        via_a = [await on_a.next_domain() for _ in ids]
        via_b = [await ws_next(on_b) for _ in ids]
        assert [e.id for e in via_a] == ids
        assert [m["id"] for m in via_b] == ids
        assert [e.data for e in via_a] == via_b  # the same messages, whichever host


async def test_the_connection_limit_holds_across_hosts(
    make_settings: SettingsFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    async with two_hosts(make_settings, max_connections_per_user=2) as (a, b):
        async with AsyncExitStack() as on_a:
            await on_a.enter_async_context(sse(http, a, user_id))
            ws = await on_a.enter_async_context(
                connect(f"{a.ws_url}/ws?token={make_token(user_id)}")
            )
            assert (await ws_next(ws))["event"] == "connected"

            refused = await http.get(f"{b.url}/events", params={"token": make_token(user_id)})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_connections"
            async with connect(f"{b.ws_url}/ws?token={make_token(user_id)}") as third:
                code, reason, _ = await ws_close_of(third)
            assert (code, reason) == (4029, "too_many_connections")

        # Both given back on A: B admits the user again.
        async def admitted() -> bool:
            async with connect(f"{b.ws_url}/ws?token={make_token(user_id)}") as again:
                return bool((await ws_next(again))["event"] == "connected")

        await wait_until(admitted)


async def test_resume_on_host_b_of_events_delivered_by_host_a(
    make_settings: SettingsFactory,
    http: httpx.AsyncClient,
    publisher: EventPublisher,
    user_id: str,
) -> None:
    async with two_hosts(make_settings) as (a, b):
        async with sse(http, a, user_id) as on_a:
            ids = [await publisher.publish(user_id, numbered(n)) for n in range(6)]
            read = [await on_a.next_domain() for _ in range(3)]
            assert [e.id for e in read] == ids[:3]
        # Disconnected: more is published while the client is away.
        ids += [await publisher.publish(user_id, numbered(n)) for n in (6, 7)]
        last_seen = read[-1].id
        assert last_seen is not None
        async with connect(
            f"{b.ws_url}/ws?token={make_token(user_id)}&last_event_id={last_seen}"
        ) as on_b:
            assert (await ws_next(on_b))["event"] == "connected"
            rest = [await ws_next(on_b) for _ in ids[3:]]
            assert [m["id"] for m in rest] == ids[3:]
            assert [m["class_id"] for m in rest] == [str(n) for n in range(3, 8)]
            live = await publisher.publish(user_id, numbered(8))
            after = await ws_next(on_b)
            assert after["id"] == live  # nothing replayed twice before it
