"""/events: live events over Server-Sent Events, for where proxies block WebSockets.

`GET /events` is served as plain ASGI (see asgi.py). Auth is `Authorization: Bearer` or
`?token=` (EventSource cannot set headers); a bad token is a 401 before any streaming. Once
streaming, every ending is a `disconnect` event and a clean end of the body; EventSource
reconnects after `retry:` with `Last-Event-ID`. While draining, new requests get 200, a
jittered `retry:` and an immediate end: never a 5xx, which EventSource treats as permanent.
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

from quart import Blueprint, request
from quart_schema import document_response, tag
from werkzeug.exceptions import MethodNotAllowed

from quart_gateway.admission.auth import Principal, bearer_token
from quart_gateway.errors import AuthError, GatewayError, TooManyConnectionsError
from quart_gateway.live import disconnect
from quart_gateway.live.messages import disconnect_frame
from quart_gateway.live.wire import sse_comment, sse_retry
from quart_gateway.ops import logs
from quart_gateway.schemas import ErrorResponse
from quart_gateway.services import Services
from quart_gateway.streams.asgi import Receive, Send, StreamRequest, cors_headers, send_json
from quart_gateway.streams.session import live_stream, stream_frames

logger = logging.getLogger(__name__)

blueprint = Blueprint("sse", __name__)


class StreamsUnavailableError(GatewayError):
    status_code = 503
    code = "streams_unavailable"
    message = "Live streams are served only while the gateway is running"


SSE_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache, no-store"),
    ("X-Accel-Buffering", "no"),
)


@blueprint.get("/events")
@tag(["Live"])
@document_response(ErrorResponse, 401)
@document_response(ErrorResponse, 429)
async def events() -> Any:
    """Live events as `text/event-stream`; see docs/protocol.md for the messages.

    `200` streams `data: <json>` frames (with `id:` when the event has one) until the gateway
    ends the stream with a `disconnect` message.
    """
    # GET /events is answered by the ASGI stream dispatcher before Quart sees it; this view
    # declares the route for the OpenAPI document and for CORS preflight requests. It runs
    # only for HEAD (Quart adds it to GET routes) or an app that is not serving.
    if request.method == "HEAD":
        raise MethodNotAllowed(valid_methods=["GET"])
    raise StreamsUnavailableError()


async def serve(svc: Services, request: StreamRequest, receive: Receive, send: Send) -> None:
    cors = cors_headers(svc, request)
    token = bearer_token(request.headers.get("authorization")) or request.query.get("token")
    try:
        principal = await svc.verifier.verify(token)
    except AuthError as exc:
        svc.metrics.rejected.labels(transport="sse", reason="invalid_token").inc()
        logger.info("event stream refused: %s", exc.message)
        return await _error(send, request, cors, exc)
    logs.bind(user_id=principal.user_id)
    if svc.lifecycle.draining:
        svc.metrics.rejected.labels(transport="sse", reason="server_restart").inc()
        await _start(send, request, cors)
        return await _end(send, _farewell(svc, disconnect.SHUTDOWN))
    lease = uuid.uuid4().hex
    if not await svc.connection_limiter.acquire(principal.user_id, lease):
        svc.metrics.rejected.labels(transport="sse", reason="too_many_connections").inc()
        logger.info("event stream refused: too many connections")
        return await _error(send, request, cors, TooManyConnectionsError(retry_after=30))
    last_event_id = request.headers.get("last-event-id") or request.query.get("last_event_id")
    svc.connection_limiter.hold(principal.user_id, lease)
    try:
        await _start(send, request, cors)
        # First bytes at once: proxies and Heroku's router wait for them.
        await _body(send, sse_retry(svc.settings.sse_retry_ms) + sse_comment("stream open"))
        if await _stream(svc, principal, last_event_id, receive, send):
            await _end(send, b"")
    except OSError as exc:  # the kernel gave up on the peer (TCP_USER_TIMEOUT, reset)
        logger.debug("event stream lost its connection: %s", exc)
    finally:
        svc.connection_limiter.release(principal.user_id, lease)


async def _stream(
    svc: Services, principal: Principal, last_event_id: str | None, receive: Receive, send: Send
) -> bool:
    """Stream until the connection ends, then send the farewell. False: the client is gone."""
    async with live_stream(svc, principal, "sse", receive) as sub:
        async for batch in stream_frames(svc, sub, "sse", last_event_id):
            await _body(send, batch[0].sse if len(batch) == 1 else b"".join(f.sse for f in batch))
        reason = sub.close_reason or disconnect.INTERNAL_ERROR
        if reason is disconnect.CLIENT_GONE:
            return False
        logger.debug("event stream ending: %s", reason.reason)
        await _body(send, _farewell(svc, reason))  # inside the block: the stall guard covers it
        return True


def _farewell(svc: Services, reason: disconnect.Ending) -> bytes:
    retry = svc.settings.sse_retry_ms
    if reason is disconnect.SHUTDOWN:
        # Spread the reconnects of every client of this worker over a few seconds.
        retry = random.randint(500, max(1000, 2 * retry))
    return sse_retry(retry) + disconnect_frame(reason).sse


async def _start(send: Send, request: StreamRequest, cors: tuple[tuple[str, str], ...]) -> None:
    headers = request.response_headers(*SSE_HEADERS, *cors)
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _end(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _error(
    send: Send, request: StreamRequest, cors: tuple[tuple[str, str], ...], error: GatewayError
) -> None:
    headers = request.response_headers(*error.headers().items(), *cors)
    body = {"error": {"code": error.code, "message": error.message}}
    await send_json(send, error.status_code, body, headers)
