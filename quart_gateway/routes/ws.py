"""/ws: live events over WebSocket, authenticated by `?token=`.

Refusals (bad token, origin not allowed, too many connections, draining) accept the socket and
then close it with a catalogue code, because browsers cannot see why a handshake was rejected.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from quart import Blueprint, websocket
from quart_cors import cors_exempt

from quart_gateway import disconnect, logs
from quart_gateway.auth import Principal
from quart_gateway.errors import AuthError
from quart_gateway.routes._live import live_stream
from quart_gateway.services import Services, services
from quart_gateway.stream import disconnect_frame, frames

logger = logging.getLogger(__name__)

blueprint = Blueprint("ws", __name__)


async def _refuse(svc: Services, reason: disconnect.Disconnect) -> None:
    svc.metrics.rejected.labels(transport="ws", reason=reason.reason).inc()
    await websocket.accept()
    await _close(reason)


async def _close(reason: disconnect.Disconnect) -> None:
    await websocket.send(disconnect_frame(reason).text)
    await websocket.close(reason.code, reason.reason)


async def _read_client() -> None:
    """Read and discard client frames: the server must notice a peer that goes away, and
    Quart buffers unread frames without bound. Client pings (text or protocol) are fine."""
    while True:
        await websocket.receive()


@blueprint.websocket("/ws")
@blueprint.websocket("/ws/")
@cors_exempt  # the origin is checked below, after accept, so the browser learns why
async def ws() -> None:
    svc = services()
    settings = svc.settings
    origin = websocket.headers.get("Origin")
    if settings.cors_origins and origin and origin.rstrip("/") not in settings.cors_origins:
        logger.info("websocket from an origin not allowed", extra={"origin": origin})
        return await _refuse(svc, disconnect.ORIGIN_NOT_ALLOWED)
    try:
        principal = await svc.verifier.verify(websocket.args.get("token"))
    except AuthError as exc:
        logger.info("websocket refused: %s", exc.message)
        return await _refuse(svc, disconnect.INVALID_TOKEN)
    logs.bind(user_id=principal.user_id)
    if svc.lifecycle.draining:
        return await _refuse(svc, disconnect.SHUTDOWN)
    lease = uuid.uuid4().hex
    if not await svc.connection_limiter.acquire(principal.user_id, lease):
        logger.info("websocket refused: too many connections")
        return await _refuse(svc, disconnect.TOO_MANY_CONNECTIONS)

    svc.connection_limiter.hold(principal.user_id, lease)
    try:
        await websocket.accept()
        await _serve(svc, principal)
    finally:
        svc.connection_limiter.release(principal.user_id, lease)


async def _serve(svc: Services, principal: Principal) -> None:
    async with live_stream(svc, principal, "ws") as sub:
        reader = asyncio.create_task(_read_client())
        try:
            async for batch in frames(
                sub,
                transport="ws",
                heartbeat_interval=svc.settings.heartbeat_interval_seconds,
                last_event_id=websocket.args.get("last_event_id"),
                history=svc.history,
                metrics=svc.metrics,
            ):
                for frame in batch:
                    await websocket.send(frame.text)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        reason = sub.close_reason or disconnect.INTERNAL_ERROR
        logger.debug("websocket closing: %s", reason.reason)
        await _close(reason)
