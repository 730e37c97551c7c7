"""/ws: live events over WebSocket, authenticated by `?token=` (plain ASGI, see asgi.py).

Refusals (bad token, origin not allowed, too many connections, draining) accept the socket and
then close it with a catalogue code, because browsers cannot see why a handshake was rejected.
"""

from __future__ import annotations

import logging
import uuid

from quart_gateway.admission.auth import Principal
from quart_gateway.errors import AuthError
from quart_gateway.live import disconnect
from quart_gateway.live.messages import disconnect_frame
from quart_gateway.ops import logs
from quart_gateway.services import Services
from quart_gateway.streams.asgi import Receive, Send, StreamRequest
from quart_gateway.streams.session import live_stream, stream_frames

logger = logging.getLogger(__name__)


async def serve(svc: Services, request: StreamRequest, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    settings = svc.settings
    origin = request.headers.get("origin")
    if settings.cors_origins and origin and origin.rstrip("/") not in settings.cors_origins:
        logger.info("websocket from an origin not allowed", extra={"origin": origin})
        return await _refuse(svc, request, send, disconnect.ORIGIN_NOT_ALLOWED)
    try:
        principal = await svc.verifier.verify(request.query.get("token"))
    except AuthError as exc:
        logger.info("websocket refused: %s", exc.message)
        return await _refuse(svc, request, send, disconnect.INVALID_TOKEN)
    logs.bind(user_id=principal.user_id)
    if svc.lifecycle.draining:
        return await _refuse(svc, request, send, disconnect.SHUTDOWN)
    lease = uuid.uuid4().hex
    if not await svc.connection_limiter.acquire(principal.user_id, lease):
        logger.info("websocket refused: too many connections")
        return await _refuse(svc, request, send, disconnect.TOO_MANY_CONNECTIONS)
    svc.connection_limiter.hold(principal.user_id, lease)
    try:
        await _accept(request, send)
        await _stream(svc, principal, request, receive, send)
    except OSError as exc:  # the kernel gave up on the peer (TCP_USER_TIMEOUT, reset)
        logger.debug("websocket lost its connection: %s", exc)
    finally:
        svc.connection_limiter.release(principal.user_id, lease)


async def _stream(
    svc: Services, principal: Principal, request: StreamRequest, receive: Receive, send: Send
) -> None:
    async with live_stream(svc, principal, "ws", receive) as sub:
        last_event_id = request.query.get("last_event_id")
        async for batch in stream_frames(svc, sub, "ws", last_event_id):
            for frame in batch:
                await send({"type": "websocket.send", "text": frame.text})
        reason = sub.close_reason or disconnect.INTERNAL_ERROR
        if reason is not disconnect.CLIENT_GONE:
            logger.debug("websocket closing: %s", reason.reason)
            await _close(send, reason)


async def _accept(request: StreamRequest, send: Send) -> None:
    await send({"type": "websocket.accept", "headers": request.response_headers()})


async def _refuse(
    svc: Services, request: StreamRequest, send: Send, reason: disconnect.Ending
) -> None:
    svc.metrics.rejected.labels(transport="ws", reason=reason.reason).inc()
    await _accept(request, send)
    await _close(send, reason)


async def _close(send: Send, reason: disconnect.Ending) -> None:
    await send({"type": "websocket.send", "text": disconnect_frame(reason).text})
    await send({"type": "websocket.close", "code": reason.code, "reason": reason.reason})
