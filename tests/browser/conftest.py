"""Headless Chromium for the browser tests, and a page that runs the client from another origin.

The tests drive Debian's Chromium (`/usr/bin/chromium`, or $CHROMIUM_PATH) through Playwright;
Playwright's own browser downloads are not used. Without Chromium the tests are skipped, or
fail when $CI is set, so that CI cannot pass without running them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A single-page app on its own origin that loads the client from the gateway's /static, as a
# frontend would. It records what the client reports on `window.record` and in the DOM.
# Query: `gateway` (where the client is loaded from), `url` (where it connects; default
# `gateway`), `transport`, `token` (what getToken returns), `tokenHook` (the name of a
# function the test exposes on `window` to serve as getToken instead: no JWT in any URL),
# `refresh` (likewise for refreshToken) and `share` (`false`: one stream per tab).
HARNESS_PAGE = """<!doctype html>
<meta charset="utf-8"><title>gateway client harness</title>
<p id="state" data-state="none"></p><p id="error"></p><ol id="events"></ol>
<script type="module">
const params = new URLSearchParams(location.search);
const gateway = params.get("gateway");
const record = (window.record = {
  ids: [], states: [], connected: 0, resyncs: 0, auth: [],
  statuses: [], resumed: [], pings: 0, lastMessageAt: 0, tokenCalls: 0, refreshCalls: 0,
  roles: [], messages: [],
});
const { GatewayClient } = await import(gateway + "/static/gateway-client.js");
const refresh = params.get("refresh");  // the name of a hook exposed by the test
const client = new GatewayClient({
  url: params.get("url") || gateway,
  transport: params.get("transport"),
  getToken: async () => {
    record.tokenCalls += 1;
    const hook = params.get("tokenHook");
    return hook ? await window[hook]() : params.get("token");
  },
  share: params.get("share") !== "false",
  onShare: (role) => { record.roles.push(role); },
  refreshToken: refresh ? async () => { record.refreshCalls += 1; return await window[refresh](); }
                        : undefined,
  backoff: { initialMs: 200, maxMs: 600 },
  restartJitterMs: 200,
  onEvent: (event) => {
    record.ids.push(event.id);
    const item = document.createElement("li");
    item.textContent = event.event + " " + event.id;
    document.getElementById("events").append(item);
  },
  onMessage: (message) => {
    record.lastMessageAt = Date.now();
    if (message.event !== "ping") record.messages.push(message.event);
    if (message.event === "ping") record.pings += 1;
  },
  onConnected: (info) => { record.connected += 1; record.resumed.push(info.resumed); },
  onResync: () => { record.resyncs += 1; },
  onStatus: (status) => {
    record.states.push(status.state);
    record.statuses.push({ ...status, at: Date.now(), lastMessageAt: record.lastMessageAt });
    const state = document.getElementById("state");
    state.dataset.state = status.state;
    state.textContent = status.state;
  },
  onAuthError: (failure) => {
    record.auth.push(failure);
    document.getElementById("error").textContent = "auth error: " + failure.reason;
  },
});
window.client = client;
client.start();
</script>
"""


@pytest.fixture(name="browser", scope="session")
async def _browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = (
            f"browser tests need Chromium at {CHROMIUM} "
            "(apt-get install -y --no-install-recommends chromium, or set CHROMIUM_PATH)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        # Playwright gives every launch a fresh temporary profile (--user-data-dir).
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture(name="page")
async def _page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(10_000)
    yield page
    await context.close()


class Harness:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.origin = f"http://127.0.0.1:{server.server_address[1]}"

    def url(self, **params: str) -> str:
        return f"{self.origin}/?{urlencode(params)}"


@pytest.fixture(name="harness")
def _harness() -> Iterator[Harness]:
    body = HARNESS_PAGE.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Harness(server)
    server.shutdown()
    server.server_close()


async def recorded(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("window.record")
    return result
