"""The dev-mode demo page (`scripts/dev`) in Chromium: live events over SSE and WebSocket,
hydrated batch status, a working transport switch."""

from __future__ import annotations

import httpx
from playwright.async_api import Page

from tests.servers import ProcessFactory
from tests.support import free_port

EVENTS_PER_RUN = 8  # 3 files added, locked, 3 essays updated, phase concluded


def dev_env(port: int) -> dict[str, str]:
    upstream = f"http://127.0.0.1:{port}/dev/upstream"
    return {"GATEWAY_DEV_MODE": "true", "RESULT_AGGREGATOR_URL": upstream, "BOS_URL": upstream}


async def simulate(base_url: str, user_id: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{base_url}/dev/simulate", json={"user_id": user_id, "step_seconds": 0.05}
        )
    assert response.status_code == 202
    batch_id: str = response.json()["batch_id"]
    return batch_id


async def test_demo_page_shows_live_events_over_sse_and_websocket(
    page: Page, gateway_process: ProcessFactory
) -> None:
    port = free_port()
    gateway = await gateway_process(dev_env(port), port=port)
    await page.goto(f"{gateway.url}/demo")
    await page.wait_for_selector("#connection[data-state=open][data-transport=sse]")

    first = await simulate(gateway.url, "demo-user")
    domain = "#events li[data-event-id]"
    await page.wait_for_function(
        f"document.querySelectorAll('{domain}').length >= {EVENTS_PER_RUN}"
    )
    card = page.locator(f".batch[data-batch-id={first}]")
    await card.get_by_text("completed", exact=True).first.wait_for()  # hydrated after the run

    await page.select_option("#transport", "ws")
    await page.wait_for_selector("#connection[data-state=open][data-transport=ws]")
    await simulate(gateway.url, "demo-user")
    await page.wait_for_function(
        f"document.querySelectorAll('{domain}').length >= {2 * EVENTS_PER_RUN}"
    )
    ids = await page.locator(domain).evaluate_all("items => items.map(i => i.dataset.eventId)")
    assert len(ids) == len(set(ids)) == 2 * EVENTS_PER_RUN
    connected = await page.locator("#events li[data-event=connected]").all_inner_texts()
    assert [text.split()[1] for text in reversed(connected)] == ["sse,", "ws,"]
    assert not await page.locator("#error.shown").count()


async def test_demo_tabs_share_one_stream_and_say_so(
    page: Page, gateway_process: ProcessFactory
) -> None:
    port = free_port()
    gateway = await gateway_process(dev_env(port), port=port)
    second = await page.context.new_page()
    for tab in (page, second):
        await tab.goto(f"{gateway.url}/demo")
        await tab.wait_for_selector("#connection[data-state=open]")
    for tab in (page, second):
        await tab.wait_for_selector("#sharing[data-tabs='2']", timeout=5_000)
    roles = [await tab.get_attribute("#sharing", "data-role") for tab in (page, second)]
    assert sorted(roles) == ["follower", "leader"]
    await simulate(gateway.url, "demo-user")
    domain = "#events li[data-event-id]"
    for tab in (page, second):
        await tab.wait_for_function(
            f"document.querySelectorAll('{domain}').length >= {EVENTS_PER_RUN}"
        )
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{gateway.url}/metrics")).text
    assert "gateway_connections" in metrics
    gauge = [
        line
        for line in metrics.splitlines()
        if line.startswith("gateway_connections{") or line.startswith("gateway_connections ")
    ]
    assert gauge, metrics
    assert sum(float(line.rsplit(" ", 1)[1]) for line in gauge) == 1  # one stream, two tabs
