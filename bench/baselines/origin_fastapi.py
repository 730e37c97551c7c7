"""Baseline on the origin's own stack: FastAPI on uvicorn (httptools, uvloop, `websockets`).

The same design as `bench.baselines.origin` (spec Checkpoint 3.2): every WebSocket (and, for
comparison, SSE) connection opens its OWN Redis pub/sub subscription to `ws:{user_id}`, parses
each message and checks its event type before forwarding it, as the origin's
`websocket_routes.py` does, on the server stack the origin ran on. Only what kept the origin
from running is fixed (the missing `datetime` import, a subscription context that closes its
pub/sub connection, an unbounded redis-py pool), plus a `connected` message once the
subscription is active so the benchmark can tell when a connection is live.

Run: `PORT=... REDIS_URL=... JWT_SECRET_KEY=... python -m bench.baselines.origin_fastapi`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import jwt
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bench.baselines.origin import check, connected_message, get_current_user_id

logger = logging.getLogger("api_gateway.websocket")
_state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # One pooled connection per subscriber: the pool must not cap them.
    _state["redis"] = aioredis.Redis.from_url(os.environ["REDIS_URL"], max_connections=2**31)
    try:
        yield
    finally:
        await _state["redis"].aclose()


app = FastAPI(lifespan=lifespan)


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


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket, token: str | None = Query(None)) -> None:
    try:
        user_id = get_current_user_id(token)
    except (PermissionError, jwt.InvalidTokenError):
        await websocket.close(code=1008, reason="Invalid token")
        return
    await websocket.accept()
    user_channel = f"ws:{user_id}"
    logger.info(f"WebSocket connection established for user: {user_id}")

    async def redis_listener(ps_client: aioredis.client.PubSub) -> None:
        async for message in ps_client.listen():
            if message and message["type"] == "message":
                text = check(message["data"], user_id)
                if text is not None:
                    await websocket.send_text(text)

    async def pinger() -> None:
        while True:
            try:
                await asyncio.sleep(15)
                await websocket.send_json(
                    {"event": "ping", "timestamp": datetime.now(UTC).isoformat()}
                )
            except asyncio.CancelledError:
                break

    tasks: list[asyncio.Task[None]] = []
    try:
        async with subscribe(user_channel) as pubsub:
            await websocket.send_text(connected_message(user_id))
            tasks = [
                asyncio.create_task(redis_listener(pubsub)),
                asyncio.create_task(pinger()),
            ]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
    except Exception as e:
        logger.error(f"WebSocket error for user {user_id}: {e}")
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        logger.info(f"WebSocket cleanup completed for user: {user_id}")


@app.get("/events")
async def events(token: str | None = Query(None)) -> Response:
    """The same design over SSE: one subscription per stream."""
    try:
        user_id = get_current_user_id(token)
    except (PermissionError, jwt.InvalidTokenError):
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    async def body() -> AsyncIterator[bytes]:
        async with subscribe(f"ws:{user_id}") as pubsub:
            yield f"data: {connected_message(user_id)}\n\n".encode()
            async for message in pubsub.listen():
                if message and message["type"] == "message":
                    text = check(message["data"], user_id)
                    if text is not None:
                        yield f"data: {text}\n\n".encode()

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def main() -> None:
    level = os.environ.get("LOG_LEVEL", "INFO")
    logging.basicConfig(level=level)
    uvicorn.run(
        app,
        host="0.0.0.0",
        port=int(os.environ.get("PORT", "8000")),
        loop="uvloop",
        http="httptools",
        ws="websockets",
        log_level=level.lower(),
        timeout_graceful_shutdown=1,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
