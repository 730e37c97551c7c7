"""One stream per browser in Chromium: the tabs of one browser context share the stream that
one of them holds (Web Locks + BroadcastChannel); a follower takes over when the leader
closes, with no event lost or repeated; users in different browser contexts stay apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page

from tests.browser.conftest import Harness, recorded
from tests.servers import LiveGateway, SettingsFactory, serving
from tests.support import make_token, publish, wait_until


@asynccontextmanager
async def tabs_of(
    browser: Browser, harness: Harness, gateway: LiveGateway, user_id: str, count: int, **q: str
) -> AsyncIterator[list[Page]]:
    """`count` tabs of one new browser context (one profile), each running the client."""
    context: BrowserContext = await browser.new_context()
    try:
        pages = []
        url = harness.url(gateway=gateway.url, token=make_token(user_id), **q)
        for _ in range(count):
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await page.goto(url)
            pages.append(page)
        for page in pages:
            await page.wait_for_selector("#state[data-state=open]")
        yield pages
    finally:
        await context.close()


async def records(pages: list[Page]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(recorded(page) for page in pages)))


async def wait_for_ids(pages: list[Page], count: int, timeout: float = 10) -> None:
    async def everywhere() -> bool:
        return all(len(r["ids"]) >= count for r in await records(pages))

    await wait_until(everywhere, timeout=timeout, interval=0.1)


async def roles(pages: list[Page]) -> list[str]:
    return [r["roles"][-1] if r["roles"] else "none" for r in await records(pages)]


def subscribers(gateway: LiveGateway) -> int:
    return gateway.services.mux.statistics().subscribers


async def test_twelve_tabs_share_one_stream_and_each_gets_every_event_once(
    browser: Browser,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    settings = make_settings(max_connections_per_user=10, cors_origins=(harness.origin,))
    async with (
        serving(settings) as gateway,
        tabs_of(browser, harness, gateway, user_id, 12) as pages,
    ):
        assert sorted(await roles(pages)) == ["follower"] * 11 + ["leader"]
        assert subscribers(gateway) == 1  # one stream for twelve tabs
        assert await pages[0].evaluate("window.client.sharedTabs()") == 12
        published = await publish(redis_url, user_id, 5, 1)
        await wait_for_ids(pages, 5)
        await asyncio.sleep(0.3)  # a duplicate would arrive by now
        for record in await records(pages):
            assert record["ids"] == published  # every event, once, in order
            assert record["connected"] == 1  # each tab hydrates once
            assert record["auth"] == []
        assert subscribers(gateway) == 1


async def test_when_the_leader_tab_closes_a_follower_takes_over_without_loss_or_duplicates(
    browser: Browser,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    settings = make_settings(cors_origins=(harness.origin,))
    async with (
        serving(settings) as gateway,
        tabs_of(browser, harness, gateway, user_id, 3) as pages,
    ):
        before = await publish(redis_url, user_id, 2, 1)
        await wait_for_ids(pages, 2)
        leader = pages[(await roles(pages)).index("leader")]
        await leader.close()
        # Published while no tab holds the stream: the new leader resumes after the last id.
        during = await publish(redis_url, user_id, 2, 10)
        rest = [page for page in pages if page is not leader]

        async def taken_over() -> bool:
            return "leader" in await roles(rest)

        await wait_until(taken_over, timeout=5, interval=0.05)
        await wait_for_ids(rest, 4)
        after = await publish(redis_url, user_id, 1, 20)
        await wait_for_ids(rest, 5)
        await asyncio.sleep(0.3)
        for record in await records(rest):
            assert record["ids"] == before + during + after
            assert record["auth"] == []
        await wait_until(lambda: subscribers(gateway) == 1, timeout=5)
        assert sorted(await roles(rest)) == ["follower", "leader"]


async def test_two_users_in_two_browser_contexts_stay_apart(
    browser: Browser,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    other = f"{user_id}-other"
    settings = make_settings(cors_origins=(harness.origin,))
    async with (
        serving(settings) as gateway,
        tabs_of(browser, harness, gateway, user_id, 2) as mine,
        tabs_of(browser, harness, gateway, other, 2) as theirs,
    ):
        assert subscribers(gateway) == 2  # one stream per user (per browser)
        my_ids = await publish(redis_url, user_id, 2, 1)
        their_ids = await publish(redis_url, other, 3, 1)
        await wait_for_ids(mine, 2)
        await wait_for_ids(theirs, 3)
        await asyncio.sleep(0.3)
        assert all(r["ids"] == my_ids for r in await records(mine))
        assert all(r["ids"] == their_ids for r in await records(theirs))


async def test_share_false_keeps_one_stream_per_tab(
    browser: Browser,
    harness: Harness,
    make_settings: SettingsFactory,
    redis_url: str,
    user_id: str,
) -> None:
    settings = make_settings(cors_origins=(harness.origin,))
    async with (
        serving(settings) as gateway,
        tabs_of(browser, harness, gateway, user_id, 2, share="false") as pages,
    ):
        assert await roles(pages) == ["none", "none"]  # always solo: no role change
        assert subscribers(gateway) == 2
        ids = await publish(redis_url, user_id, 2, 1)
        await wait_for_ids(pages, 2)
        assert all(r["ids"] == ids for r in await records(pages))
