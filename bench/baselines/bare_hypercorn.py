"""The floor under the gateway's memory: a plain ASGI app on Hypercorn that does nothing.

`/ws` accepts, sends one `connected` message and waits for the disconnect; `GET /events`
starts a `text/event-stream`, sends one `connected` event and waits the same way. No Redis,
no auth, no per-connection state of its own: what an idle connection costs here is
Hypercorn's (and asyncio's) share, with the gateway's Hypercorn settings. `--systems bare`.

Run: `PORT=... python -m bench.baselines.bare_hypercorn`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

Message = dict[str, Any]
_CONNECTED = json.dumps({"event": "connected"})


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _CONNECTED})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["path"] == "/events":
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = f"data: {_CONNECTED}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def main() -> None:
    config = Config()
    config.bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
    # As the gateway configures Hypercorn (quart_gateway/serving/server.py).
    config.websocket_ping_interval = None
    config.backlog = 4096
    config.websocket_max_message_size = 64 * 1024
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
