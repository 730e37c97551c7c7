"""Baseline: the origin design's live endpoint (spec Checkpoint 3.2), minimal and faithful.

Every WebSocket (and, for comparison, SSE) connection opens its OWN Redis pub/sub
subscription to `ws:{user_id}` and forwards each message after a per-connection JSON parse and
event-type check, as the origin's `websocket_routes.py` does. Only what kept the origin from
running is fixed: the missing `datetime` import, a subscription context that closes its pub/sub
connection, and a `connected` message once the subscription is active, so the benchmark can
tell when a connection is live (the origin sent nothing until the first event).

Run: `PORT=... REDIS_URL=... JWT_SECRET_KEY=... python -m bench.baselines.origin`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import jwt
import redis.asyncio as aioredis
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request, websocket

logger = logging.getLogger("api_gateway.websocket")

EVENT_TYPES = [
    "batch_phase_concluded",
    "essay_status_updated",
    "batch_file_added",
    "batch_file_removed",
    "batch_locked_for_processing",
    "student_parsing_completed",
    "essay_student_association_updated",
    "class_created",
    "class_updated",
    "student_created",
    "student_updated",
]

app = Quart(__name__)
_state: dict[str, Any] = {}


def get_current_user_id(token: str | None) -> str:
    if token is None:
        raise PermissionError("Missing token")
    claims = jwt.decode(
        token, os.environ["JWT_SECRET_KEY"], algorithms=["HS256"], options={"require": ["exp"]}
    )
    user_id = claims.get("sub")
    if not user_id:
        raise PermissionError("Token has no subject")
    return str(user_id)


@app.before_serving
async def _start() -> None:
    # One pooled connection per subscriber: the pool must not cap them (redis-py's default
    # cap would refuse connections long before the design's own limits show).
    _state["redis"] = aioredis.Redis.from_url(os.environ["REDIS_URL"], max_connections=2**31)


@app.after_serving
async def _stop() -> None:
    await _state["redis"].aclose()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@asynccontextmanager
async def subscribe(channel: str) -> AsyncIterator[aioredis.client.PubSub]:
    """The origin's `redis_client.subscribe(channel)`: one pub/sub connection per call."""
    pubsub = _state["redis"].pubsub()
    await pubsub.subscribe(channel)
    try:
        yield pubsub
    finally:
        try:
            await pubsub.unsubscribe(channel)
        finally:
            await pubsub.aclose()


def connected_message(user_id: str) -> str:
    return json.dumps(
        {"event": "connected", "user": user_id, "timestamp": datetime.now(UTC).isoformat()}
    )


def check(data: bytes | str, user_id: str) -> str | None:
    """The origin's per-connection parse and filter: the text to forward, or None."""
    try:
        event_data = json.loads(data)
        event_type = event_data.get("event")
        if event_type in EVENT_TYPES:
            logger.debug(f"Sent {event_type} event to user {user_id}")
            return data.decode() if isinstance(data, bytes) else data
        logger.warning(f"Unknown event type received: {event_type}")
    except json.JSONDecodeError:
        logger.error(f"Invalid JSON in Redis message: {data!r}")
    except Exception as e:
        logger.error(f"Error processing Redis message: {e}")
    return None


@app.websocket("/ws")
async def websocket_endpoint() -> None:
    try:
        user_id = get_current_user_id(websocket.args.get("token"))
    except (PermissionError, jwt.InvalidTokenError):
        await websocket.accept()
        await websocket.close(1008, "Invalid token")
        return
    await websocket.accept()
    user_channel = f"ws:{user_id}"
    logger.info(f"WebSocket connection established for user: {user_id}")

    async def redis_listener(ps_client: aioredis.client.PubSub) -> None:
        async for message in ps_client.listen():
            if message and message["type"] == "message":
                text = check(message["data"], user_id)
                if text is not None:
                    await websocket.send(text)

    async def pinger() -> None:
        while True:
            try:
                await asyncio.sleep(15)
                await websocket.send_json(
                    {"event": "ping", "timestamp": datetime.now(UTC).isoformat()}
                )
            except asyncio.CancelledError:
                break

    listener_task = None
    pinger_task = None
    try:
        async with subscribe(user_channel) as pubsub:
            await websocket.send(connected_message(user_id))
            listener_task = asyncio.create_task(redis_listener(pubsub))
            pinger_task = asyncio.create_task(pinger())
            _, pending = await asyncio.wait(
                [listener_task, pinger_task], return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
    except Exception as e:
        logger.error(f"WebSocket error for user {user_id}: {e}")
    finally:
        if listener_task and not listener_task.done():
            listener_task.cancel()
        if pinger_task and not pinger_task.done():
            pinger_task.cancel()
        logger.info(f"WebSocket cleanup completed for user: {user_id}")


@app.get("/events")
async def events() -> Response:
    """The same design over SSE: one subscription per stream."""
    try:
        user_id = get_current_user_id(request.args.get("token"))
    except (PermissionError, jwt.InvalidTokenError):
        return Response('{"error":"unauthorized"}', status=401)

    async def body() -> AsyncIterator[bytes]:
        async with subscribe(f"ws:{user_id}") as pubsub:
            yield f"data: {connected_message(user_id)}\n\n".encode()
            async for message in pubsub.listen():
                if message and message["type"] == "message":
                    text = check(message["data"], user_id)
                    if text is not None:
                        yield f"data: {text}\n\n".encode()

    response = Response(body(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None
    return response


async def main() -> None:
    config = Config()
    config.bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
