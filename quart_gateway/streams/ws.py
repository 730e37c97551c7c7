"""/ws: live events over WebSocket (plain ASGI, see dispatch.py).

Admission (admission/pipeline.py) decides; a refusal accepts the socket and then closes it
with its catalogue code, because browsers cannot see why a handshake was rejected.
"""

from __future__ import annotations

import logging

from quart_gateway.admission.pipeline import Admitted, Refused, admit
from quart_gateway.live import disconnect
from quart_gateway.live.messages import disconnect_frame
from quart_gateway.services import Services
from quart_gateway.streams.asgi import Receive, Send, StreamRequest
from quart_gateway.streams.session import live_stream, stream_frames

logger = logging.getLogger(__name__)


async def serve(svc: Services, request: StreamRequest, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    attempt = request.attempt("ws")
    async with admit(svc, attempt) as verdict:
        if isinstance(verdict, Refused):
            await _accept(request, send)
            return await _close(send, verdict.ending)
        try:
            await _accept(request, send)
            await _stream(svc, verdict, request, receive, send)
        except OSError as exc:  # the kernel gave up on the peer (TCP_USER_TIMEOUT, reset)
            logger.debug("websocket lost its connection: %s", exc)


async def _stream(
    svc: Services, admitted: Admitted, request: StreamRequest, receive: Receive, send: Send
) -> None:
    async with live_stream(svc, admitted.principal, "ws", receive) as sub:
        last_event_id = request.query.get("last_event_id")
        async for batch in stream_frames(svc, sub, "ws", last_event_id, admitted):
            for frame in batch:
                await send({"type": "websocket.send", "text": frame.text})
        reason = sub.close_reason or disconnect.INTERNAL_ERROR
        if reason is not disconnect.CLIENT_GONE:
            logger.debug("websocket closing: %s", reason.reason)
            await _close(send, reason)


async def _accept(request: StreamRequest, send: Send) -> None:
    await send({"type": "websocket.accept", "headers": request.response_headers()})


async def _close(send: Send, reason: disconnect.Ending) -> None:
    notice = disconnect_frame(reason, disconnect.retry_hint_ms(reason))
    await send({"type": "websocket.send", "text": notice.text})
    await send({"type": "websocket.close", "code": reason.code, "reason": reason.reason})
