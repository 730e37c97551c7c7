"""The browser client in Chromium, on a page of another origin: resume across a gateway
restart, and no retry loop on a refused token."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import Harness, recorded
from tests.servers import ProcessFactory, SettingsFactory, serving
from tests.support import make_token, publish, wait_until


async def ids_on(page: Page) -> list[str]:
    record = await recorded(page)
    ids: list[str] = record["ids"]
    return ids


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_resumes_after_a_gateway_restart_without_loss_or_duplicates(
    transport: str,
    page: Page,
    harness: Harness,
    gateway_process: ProcessFactory,
    redis_url: str,
    user_id: str,
) -> None:
    env = {"REDIS_URL": redis_url, "CORS_ORIGINS": harness.origin, "SHUTDOWN_GRACE_SECONDS": "2"}
    gateway = await gateway_process(env)
    token = make_token(user_id)
    await page.goto(harness.url(gateway=gateway.url, transport=transport, token=token))
    await page.wait_for_selector("#state[data-state=open]")

    before = await publish(redis_url, user_id, 3, 1)
    await wait_until(lambda: _has(page, before), timeout=5)

    gateway.terminate()
    assert gateway.wait(10) == 0
    await page.wait_for_selector("#state[data-state=waiting]")
    while_down = await publish(redis_url, user_id, 3, 4)
    await asyncio.sleep(0.5)  # the client keeps retrying against a closed port meanwhile

    await gateway_process(env, port=gateway.port)
    await wait_until(lambda: _has(page, before + while_down), timeout=10)
    after = await publish(redis_url, user_id, 1, 7)
    await wait_until(lambda: _has(page, before + while_down + after), timeout=5)

    assert await ids_on(page) == before + while_down + after  # in order, none twice
    record = await recorded(page)
    assert record["connected"] == 2
    assert record["auth"] == []
    assert "waiting" in record["states"]
    assert await page.locator("#events li").count() == 7


async def _has(page: Page, expected: list[str]) -> bool:
    return len(await ids_on(page)) >= len(expected)


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_refused_token_shows_an_auth_error_and_is_not_retried(
    transport: str, page: Page, harness: Harness, make_settings: SettingsFactory, user_id: str
) -> None:
    attempts: list[str] = []

    def on_request(request: Any) -> None:
        if "/events" in request.url or "/v1/stream-tickets" in request.url:
            attempts.append(request.url)

    page.on("request", on_request)
    page.on("websocket", lambda ws: attempts.append(ws.url))
    bad_token = make_token(user_id, key="not-the-gateway-key-0123456789abcdef0123456789")
    async with serving(make_settings(cors_origins=(harness.origin,))) as gateway:
        await page.goto(harness.url(gateway=gateway.url, transport=transport, token=bad_token))
        await page.wait_for_selector("#state[data-state=auth_failed]")
        assert await page.inner_text("#error") == "auth error: invalid_token"
        await asyncio.sleep(3)  # several backoff windows of the harness (200-600 ms)

    record = await recorded(page)
    assert record["connected"] == 0
    assert len(record["auth"]) == 1
    assert record["states"][-1] == "auth_failed"
    # The ticket request sees the 401: no stream is even attempted.
    assert attempts == [f"{gateway.url}/v1/stream-tickets"], attempts
