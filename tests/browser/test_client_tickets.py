"""Chromium: stream URLs hold tickets, never a JWT; the gateway's reconnect delays are obeyed
(1013 `overloaded`, 4000 `max_lifetime`), by the browser client and by a bare EventSource."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from tests.browser.conftest import Harness, recorded
from tests.browser.test_client_reconnect import (
    Attempts,
    statuses_with,
    wait_connected,
    wait_for_ids,
    wait_for_status,
)
from tests.servers import SettingsFactory, serving
from tests.support import make_token, publish, wait_until

TRANSPORTS = pytest.mark.parametrize("transport", ["sse", "ws"])


@TRANSPORTS
async def test_no_url_the_page_requests_holds_a_jwt(
    transport: str,
    page: Page,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    token = make_token(user_id)

    async def token_hook() -> str:  # the page gets its JWT without it being in any URL
        return token

    await page.expose_function("tokenHook", token_hook)
    attempts = Attempts(page)
    # Streams end after 1.5 s: the client reconnects, resumes, and asks for new tickets.
    settings = make_settings(max_connection_seconds=1.5, cors_origins=(harness.origin,))
    async with serving(settings) as gateway:
        await page.goto(
            harness.url(gateway=gateway.url, transport=transport, tokenHook="tokenHook")
        )
        await page.wait_for_selector("#state[data-state=open]")
        ids = await publish(redis_url, user_id, 2, 1)
        await wait_connected(page, 2, timeout=8)
        ids += await publish(redis_url, user_id, 2, 10)
        await wait_for_ids(page, 4)
        await page.evaluate("window.client.stop()")

    assert (await recorded(page))["ids"] == ids
    assert len(attempts.urls) >= 2
    assert all(set(attempts.query(n)) <= {"ticket", "last_event_id"} for n in range(2))
    assert len({attempts.query(n)["ticket"] for n in range(len(attempts.urls))}) == len(
        attempts.urls
    )  # a new ticket for every attempt
    _header, payload, signature = token.split(".")
    for url in urls:
        assert "token=" not in url, url
        for part in (token, payload, signature):
            assert part not in url, url


@TRANSPORTS
async def test_overloaded_waits_for_retry_ms_then_connects(
    transport: str, page: Page, harness: Harness, make_settings: SettingsFactory, user_id: str
) -> None:
    attempts = Attempts(page)
    settings = make_settings(admission_max_pending=1, cors_origins=(harness.origin,))
    async with serving(settings) as gateway:
        gate = gateway.services.setup_gate
        assert gate.try_enter()  # the only set-up slot is taken: every new stream is turned away
        token = make_token(user_id)
        await page.goto(harness.url(gateway=gateway.url, transport=transport, token=token))
        refused = await wait_for_status(page, "overloaded", timeout=5)
        gate.leave()
        await wait_connected(page, 1, timeout=8)
        await page.evaluate("window.client.stop()")

    record = await recorded(page)
    assert refused["code"] == 1013
    assert refused["state"] == "waiting"
    assert 1_000 <= refused["retryInMs"] <= 5_000  # the gateway's jittered retry_ms
    first_refusal = len(statuses_with(record, "overloaded"))
    assert first_refusal == 1
    # The next attempt came after retry_ms, not after the harness's 200-600 ms backoff.
    waited = (attempts.times[1] - attempts.times[0]) * 1000
    assert refused["retryInMs"] - 100 <= waited <= refused["retryInMs"] + 1_500, waited
    assert len(attempts.urls) == 2, attempts.urls
    assert record["auth"] == []


@TRANSPORTS
async def test_max_lifetime_reconnects_after_retry_ms_and_resumes_without_loss(
    transport: str,
    page: Page,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    settings = make_settings(max_connection_seconds=1.5, cors_origins=(harness.origin,))
    published: list[str] = []
    async with serving(settings) as gateway:
        token = make_token(user_id)
        await page.goto(harness.url(gateway=gateway.url, transport=transport, token=token))
        await page.wait_for_selector("#state[data-state=open]")
        deadline = time.monotonic() + 4.5  # three lifetimes
        n = 0
        while time.monotonic() < deadline:
            published += await publish(redis_url, user_id, 1, n)
            n += 1
            await asyncio.sleep(0.1)
        await wait_for_ids(page, len(published), timeout=8)
        await page.evaluate("window.client.stop()")

    record = await recorded(page)
    assert record["ids"] == published  # none lost across the reconnects, none twice
    ended = statuses_with(record, "max_lifetime")
    assert len(ended) >= 2
    assert all(s["code"] == 4000 and 0 <= s["retryInMs"] <= 1_000 for s in ended)
    assert record["connected"] >= 3
    assert record["resumed"][0] is False
    assert all(record["resumed"][1:])
    assert record["resyncs"] == 0


RAW_EVENTSOURCE_PAGE = """<!doctype html><meta charset="utf-8"><title>raw EventSource</title>
<script>
window.seen = [];
window.opened = 0;
window.errors = [];
const source = new EventSource(new URLSearchParams(location.search).get("stream"));
source.onopen = () => { window.opened += 1; };
source.onmessage = (e) => { window.seen.push({ at: Date.now(), ...JSON.parse(e.data) }); };
source.onerror = () => { window.errors.push({ at: Date.now(), state: source.readyState }); };
</script>
"""


async def test_a_native_eventsource_turned_away_by_admission_control_comes_back_by_itself(
    page: Page, make_settings: SettingsFactory, user_id: str
) -> None:
    requests: list[tuple[float, str]] = []
    page.on("request", lambda r: requests.append((time.monotonic(), r.url)))
    settings = make_settings(admission_max_pending=1)
    async with serving(settings) as gateway, httpx.AsyncClient() as http:
        gate = gateway.services.setup_gate
        assert gate.try_enter()
        answer = await http.post(
            f"{gateway.url}/v1/stream-tickets",
            headers={"Authorization": f"Bearer {make_token(user_id)}"},
        )
        # Turned away before its credential is looked at, the ticket is still unspent when
        # EventSource presents the same URL again.
        stream = f"{gateway.url}/events?ticket={answer.json()['ticket']}"

        async def serve_page(route: Any) -> None:
            await route.fulfill(body=RAW_EVENTSOURCE_PAGE, content_type="text/html")

        await page.route(f"{gateway.url}/raw*", serve_page)
        await page.goto(f"{gateway.url}/raw?{httpx.QueryParams(stream=stream)}")

        async def seen(event: str) -> bool:
            return any(m["event"] == event for m in await page.evaluate("window.seen"))

        await wait_until(lambda: seen("disconnect"), timeout=5)
        gate.leave()
        await wait_until(lambda: seen("connected"), timeout=8)
        seen_messages: list[dict[str, Any]] = await page.evaluate("window.seen")
        errors: list[dict[str, Any]] = await page.evaluate("window.errors")
        await page.close()

    farewell = next(m for m in seen_messages if m["event"] == "disconnect")
    connected = next(m for m in seen_messages if m["event"] == "connected")
    assert (farewell["code"], farewell["reason"], farewell["reconnect"]) == (
        1013,
        "overloaded",
        True,
    )
    assert 1_000 <= farewell["retry_ms"] <= 5_000
    # The end of the first response: EventSource reconnects (CONNECTING), never gives up.
    assert errors
    assert errors[0]["state"] == 0
    waited = connected["at"] - farewell["at"]
    assert farewell["retry_ms"] - 100 <= waited <= farewell["retry_ms"] + 2_000, waited
    streams = [url for _, url in requests if "/events" in url]
    assert len(streams) == 2, streams  # the refused one and the reconnect, same URL
