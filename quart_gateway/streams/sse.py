"""/events: live events over Server-Sent Events, for where proxies block WebSockets.

`GET /events` is served as plain ASGI (see dispatch.py). Auth is `Authorization: Bearer`,
`?ticket=` (a single-use stream ticket: EventSource cannot set headers) or `?token=`; a bad
credential is a 401 before any streaming. Once
streaming, every ending is a `disconnect` event and a clean end of the body; EventSource
reconnects after `retry:` with `Last-Event-ID`. While draining, new requests get 200, a
jittered `retry:` and an immediate end: never a 5xx, which EventSource treats as permanent.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, request
from quart_schema import document_response, tag
from werkzeug.exceptions import MethodNotAllowed, NotFound

from quart_gateway.admission.pipeline import Admitted, Refused, admit
from quart_gateway.errors import GatewayError
from quart_gateway.live import disconnect
from quart_gateway.live.messages import disconnect_frame
from quart_gateway.live.wire import sse_comment, sse_retry
from quart_gateway.schemas import ErrorResponse
from quart_gateway.services import Services
from quart_gateway.streams.asgi import Receive, Send, StreamRequest, send_json
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
    # GET /events is answered by StreamingQuart.asgi_app before Quart routes it; this view
    # declares the route for the OpenAPI document and for CORS preflight requests. It runs
    # only for HEAD (Quart adds it to GET routes) or an app that is not serving.
    if request.method == "HEAD":
        raise MethodNotAllowed(valid_methods=["GET"])
    if request.scope["path"] != "/events":  # `//events`: Werkzeug ignores leading slashes
        raise NotFound()
    raise StreamsUnavailableError()


async def serve(svc: Services, request: StreamRequest, receive: Receive, send: Send) -> None:
    cors = svc.cors.stream_headers(request.headers.get("origin"))
    attempt = request.attempt("sse")
    async with admit(svc, attempt) as verdict:
        if isinstance(verdict, Refused):
            if verdict.error is not None:
                return await _error(send, request, cors, verdict.error)
            await _start(send, request, cors)
            return await _end(send, _farewell(svc, verdict.ending))
        last_event_id = request.headers.get("last-event-id") or request.query.get("last_event_id")
        try:
            await _start(send, request, cors)
            # First bytes at once: proxies and Heroku's router wait for them.
            await _body(send, sse_retry(svc.settings.sse_retry_ms) + sse_comment("stream open"))
            if await _stream(svc, verdict, last_event_id, receive, send):
                await _end(send, b"")
        except OSError as exc:  # the kernel gave up on the peer (TCP_USER_TIMEOUT, reset)
            logger.debug("event stream lost its connection: %s", exc)


async def _stream(
    svc: Services,
    admitted: Admitted,
    last_event_id: str | None,
    receive: Receive,
    send: Send,
) -> bool:
    """Stream until the connection ends, then send the farewell. False: the client is gone."""
    async with live_stream(svc, admitted.principal, "sse", receive) as sub:
        async for batch in stream_frames(svc, sub, "sse", last_event_id, admitted):
            await _body(send, batch[0].sse if len(batch) == 1 else b"".join(f.sse for f in batch))
        reason = sub.close_reason or disconnect.INTERNAL_ERROR
        if reason is disconnect.CLIENT_GONE:
            return False
        logger.debug("event stream ending: %s", reason.reason)
        await _body(send, _farewell(svc, reason))  # inside the block: the stall guard covers it
        return True


def _farewell(svc: Services, reason: disconnect.Ending) -> bytes:
    """`retry:` and the `disconnect` message. A restart or an overload asks for a jittered
    delay (the same in both), so that the clients sent away do not return all at once."""
    hint = disconnect.retry_hint_ms(reason)
    retry = svc.settings.sse_retry_ms if hint is None else hint
    return sse_retry(retry) + disconnect_frame(reason, hint).sse


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
    await send_json(send, error.status_code, error.body(), headers)
