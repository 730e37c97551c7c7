"""The browser client's reconnect paths in Chromium, on a page of another origin: token expiry
(4002) with a refresh hook, heartbeat liveness on a silent link, a slow consumer (4008) and
too many connections (4029 / HTTP 429)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from playwright.async_api import Page
from websockets.asyncio.client import connect

from events.channels import parse_stream_id
from publishers import EventPublisher, FileServicePublisher
from tests.browser.conftest import Harness, recorded
from tests.servers import SettingsFactory, serving
from tests.support import make_token, proxy_to, publish, wait_until, ws_next

TRANSPORTS = pytest.mark.parametrize("transport", ["sse", "ws"])


async def publish_burst(redis_url: str, user_id: str, count: int) -> list[str]:
    """Publish `count` events at once; their ids in stream order."""
    async with EventPublisher.from_url(redis_url) as publisher:
        files = FileServicePublisher(publisher)
        ids = await asyncio.gather(
            *(
                files.publish_file_added_event("b-1", f"essay-{n}", f"essay-{n}.docx", user_id)
                for n in range(count)
            )
        )
    return sorted(ids, key=parse_stream_id)


class Attempts:
    """Stream connection attempts the page makes: EventSource/fetch requests and WebSockets."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.times: list[float] = []
        self.tickets = 0  # POST /v1/stream-tickets requests
        page.on("request", lambda request: self._seen(request.url, "/events"))
        page.on("websocket", lambda ws: self._seen(ws.url, "/ws"))

    def _seen(self, url: str, path: str) -> None:
        if urlsplit(url).path == "/v1/stream-tickets":
            self.tickets += 1
        if urlsplit(url).path == path:
            self.urls.append(url)
            self.times.append(time.monotonic())

    def query(self, index: int) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.urls[index]).query).items()}


def statuses_with(record: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    return [s for s in record["statuses"] if s.get("reason") == reason]


async def wait_for_ids(page: Page, count: int, timeout: float = 10) -> list[str]:
    async def enough() -> bool:
        return len((await recorded(page))["ids"]) >= count

    await wait_until(enough, timeout=timeout)
    ids: list[str] = (await recorded(page))["ids"]
    return ids


async def wait_for_status(page: Page, reason: str, timeout: float = 10) -> dict[str, Any]:
    async def seen() -> bool:
        return bool(statuses_with(await recorded(page), reason))

    await wait_until(seen, timeout=timeout)
    return statuses_with(await recorded(page), reason)[0]


async def wait_connected(page: Page, count: int, timeout: float = 10) -> None:
    async def enough() -> bool:
        record = await recorded(page)
        return bool(record["connected"] >= count and record["states"][-1] == "open")

    await wait_until(enough, timeout=timeout)


# --- 4002 token_expired --------------------------------------------------------------------


@TRANSPORTS
async def test_token_expiry_refreshes_the_token_and_resumes_without_loss_or_duplicates(
    transport: str,
    page: Page,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    attempts = Attempts(page)
    fresh = make_token(user_id, expires_in=300)
    meanwhile: list[str] = []

    async def refresh_hook() -> str:
        # Called after the gateway ended the stream and before the client reconnects: what
        # is published here is published while the page has no stream.
        meanwhile.extend(await publish(redis_url, user_id, 2, 10))
        return fresh

    await page.expose_function("refreshHook", refresh_hook)
    short = make_token(user_id, expires_in=3)
    exp_ms = jwt.decode(short, options={"verify_signature": False})["exp"] * 1000
    async with serving(make_settings(cors_origins=(harness.origin,))) as gateway:
        await page.goto(
            harness.url(
                gateway=gateway.url, transport=transport, token=short, refresh="refreshHook"
            )
        )
        await page.wait_for_selector("#state[data-state=open]")
        before = await publish(redis_url, user_id, 2, 1)
        await wait_for_ids(page, 2, timeout=5)

        expired = await wait_for_status(page, "token_expired", timeout=6)
        await wait_connected(page, 2, timeout=5)
        await wait_for_ids(page, 4, timeout=5)
        after = await publish(redis_url, user_id, 1, 20)
        await wait_for_ids(page, 5, timeout=5)
        await page.evaluate("window.client.stop()")  # no server_restart reconnect on exit

    record = await recorded(page)
    assert len(meanwhile) == 2
    assert record["ids"] == before + meanwhile + after  # in order, none twice
    assert expired["code"] == 4002
    assert expired["state"] == "waiting"
    # The gateway ends the stream at `exp` at the latest (a little earlier, at random).
    assert exp_ms - 1_000 <= expired["at"] <= exp_ms + 1_000, (expired["at"], exp_ms)
    assert record["tokenCalls"] == 1
    assert record["refreshCalls"] == 1
    assert record["auth"] == []
    assert record["resumed"] == [False, True]
    # Two streams, each with a ticket of its own (no token in the URL); the second resumes
    # after the last event.
    assert len(attempts.urls) == 2, attempts.urls
    assert attempts.query(0).keys() == {"ticket"}
    assert attempts.query(1).keys() == {"ticket", "last_event_id"}
    assert attempts.query(0)["ticket"] != attempts.query(1)["ticket"]
    assert attempts.query(1)["last_event_id"] == before[-1]
    assert attempts.tickets == 2


# --- heartbeat liveness ------------------------------------------------------------------------


HEARTBEAT = 0.3  # seconds; the client allows max(1 s, 2.5 x this) of silence
LIVENESS_MS = 1_000


@TRANSPORTS
async def test_a_silent_link_is_dropped_after_missed_heartbeats_and_the_client_resumes(
    transport: str,
    page: Page,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    attempts = Attempts(page)
    settings = make_settings(heartbeat_interval_seconds=HEARTBEAT, cors_origins=(harness.origin,))
    async with serving(settings) as gateway, proxy_to(gateway.port) as proxy:
        token = make_token(user_id)
        await page.goto(
            harness.url(gateway=gateway.url, url=proxy.http_url, transport=transport, token=token)
        )
        await page.wait_for_selector("#state[data-state=open]")

        # Heartbeats keep a quiet stream alive well past the liveness window.
        async def pings() -> bool:
            return bool((await recorded(page))["pings"] >= 8)  # >= 2.4 s of pings

        await wait_until(pings, timeout=6)
        record = await recorded(page)
        assert record["connected"] == 1
        assert statuses_with(record, "heartbeat_timeout") == []

        before = await publish(redis_url, user_id, 2, 1)
        await wait_for_ids(page, 2, timeout=5)
        proxy.freeze()  # the stream stays open, but nothing reaches the page any more
        during = await publish(redis_url, user_id, 2, 10)

        timeout = await wait_for_status(page, "heartbeat_timeout", timeout=5)
        await wait_connected(page, 2, timeout=5)
        await wait_for_ids(page, 4, timeout=5)
        after = await publish(redis_url, user_id, 1, 20)
        await wait_for_ids(page, 5, timeout=5)
        await page.evaluate("window.client.stop()")  # no server_restart reconnect on exit

    record = await recorded(page)
    assert record["ids"] == before + during + after  # the frozen events came by resume
    assert timeout["state"] == "waiting"
    silent_ms = timeout["at"] - timeout["lastMessageAt"]  # since the last message of any kind
    assert LIVENESS_MS - 50 <= silent_ms <= LIVENESS_MS + 1_000, silent_ms
    assert record["resumed"] == [False, True]
    assert record["auth"] == []
    assert len(attempts.urls) == 2, attempts.urls
    assert attempts.query(1)["last_event_id"] == before[-1]
    assert proxy.connections >= 2


# --- 4008 slow_consumer --------------------------------------------------------------------


@TRANSPORTS
async def test_a_slow_consumer_disconnect_reconnects_and_resumes_without_loss_or_duplicates(
    transport: str,
    page: Page,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    # A one-event buffer: a burst arriving at once overflows it.
    settings = make_settings(subscriber_queue_events=1, cors_origins=(harness.origin,))
    async with serving(settings) as gateway:
        token = make_token(user_id)
        await page.goto(harness.url(gateway=gateway.url, transport=transport, token=token))
        await page.wait_for_selector("#state[data-state=open]")
        # A first event gives the client an id to resume from (without one, a reconnect
        # starts from "now" and the app must hydrate: `resumed` is false).
        first = await publish(redis_url, user_id, 1, 0)
        await wait_for_ids(page, 1, timeout=5)
        burst = await publish_burst(redis_url, user_id, 30)
        slow = await wait_for_status(page, "slow_consumer", timeout=5)
        await wait_for_ids(page, 1 + len(burst), timeout=10)
        await wait_connected(page, 2, timeout=5)
        after = await publish(redis_url, user_id, 1, 100)
        await wait_for_ids(page, 1 + len(burst) + 1, timeout=5)

    record = await recorded(page)
    assert slow["code"] == 4008
    assert slow["state"] == "waiting"
    assert record["ids"] == first + burst + after  # in order, none twice
    assert record["connected"] >= 2
    assert record["resumed"][0] is False
    assert all(record["resumed"][1:])
    assert record["resyncs"] == 0
    assert record["auth"] == []


# --- 4029 too_many_connections -------------------------------------------------------------


@asynccontextmanager
async def holding_the_slot(ws_url: str, user_id: str) -> AsyncIterator[None]:
    async with connect(f"{ws_url}/ws?token={make_token(user_id)}") as conn:
        assert (await ws_next(conn))["event"] == "connected"
        yield


async def test_too_many_connections_over_websocket_backs_off_and_connects_when_a_slot_frees(
    page: Page, harness: Harness, make_settings: SettingsFactory, user_id: str
) -> None:
    attempts = Attempts(page)
    settings = make_settings(max_connections_per_user=1, cors_origins=(harness.origin,))
    async with serving(settings) as gateway:
        async with holding_the_slot(gateway.ws_url, user_id):
            token = make_token(user_id)
            await page.goto(harness.url(gateway=gateway.url, transport="ws", token=token))
            await wait_until(lambda: len(attempts.urls) >= 4, timeout=10)
            refused = statuses_with(await recorded(page), "too_many_connections")
        await wait_connected(page, 1, timeout=5)
        record = await recorded(page)
        await page.evaluate("window.client.stop()")  # no server_restart reconnect on exit

    refused_attempts = attempts.times[: len(refused)]
    gaps = [b - a for a, b in pairwise(refused_attempts)]
    assert len(refused) >= 3
    assert all(s["code"] == 4029 and s["state"] == "waiting" for s in refused)
    assert all(s["retryInMs"] >= 1_000 for s in refused)  # at least 1 s, not the 200 ms backoff
    assert all(gap >= 0.9 for gap in gaps), gaps  # no hammering
    assert record["connected"] == 1
    assert record["auth"] == []
    assert record["states"][-1] == "open"
    # It connected at the first attempt after the slot freed: one more socket, no burst.
    assert len(attempts.urls) <= len(refused) + 1, attempts.urls


async def test_too_many_connections_over_sse_waits_for_retry_after(
    page: Page, harness: Harness, make_settings: SettingsFactory, user_id: str
) -> None:
    attempts = Attempts(page)
    settings = make_settings(max_connections_per_user=1, cors_origins=(harness.origin,))
    async with serving(settings) as gateway:
        async with holding_the_slot(gateway.ws_url, user_id):
            token = make_token(user_id)
            await page.goto(harness.url(gateway=gateway.url, transport="sse", token=token))
            refused = await wait_for_status(page, "too_many_connections", timeout=5)
            await asyncio.sleep(2)  # an observation window of several harness backoffs
            assert len(attempts.urls) == 2, attempts.urls  # the EventSource and its probe
        # The gateway's Retry-After is 30 s; a network change ("online") cuts the wait short.
        await page.context.set_offline(True)
        await page.context.set_offline(False)
        await wait_connected(page, 1, timeout=5)
        record = await recorded(page)
        await page.evaluate("window.client.stop()")  # no server_restart reconnect on exit

    assert refused["state"] == "waiting"
    assert refused["retryInMs"] == 30_000  # Retry-After, readable through CORS
    assert len(statuses_with(record, "too_many_connections")) == 1
    assert record["connected"] == 1
    assert record["auth"] == []
    assert len(attempts.urls) == 3, attempts.urls
