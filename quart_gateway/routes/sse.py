"""/events: live events over Server-Sent Events, for where proxies block WebSockets.

Auth is `Authorization: Bearer` or `?token=` (EventSource cannot set headers); a bad token is a
401 before any streaming. Once streaming, every ending is a `disconnect` event and a clean end
of the body; EventSource reconnects after `retry:` with `Last-Event-ID`. While draining, new
requests get 200, a jittered `retry:` and an immediate end: never a 5xx, which EventSource
treats as permanent.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator

from quart import Blueprint, Response, request
from quart_schema import document_response, tag

from quart_gateway import disconnect, logs
from quart_gateway.auth import Principal, bearer_token
from quart_gateway.errors import AuthError, TooManyConnectionsError
from quart_gateway.routes._live import live_stream
from quart_gateway.schemas import ErrorResponse
from quart_gateway.services import Services, services
from quart_gateway.stream import disconnect_frame, frames
from quart_gateway.wire import sse_comment, sse_retry

logger = logging.getLogger(__name__)

blueprint = Blueprint("sse", __name__)

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


def _farewell(svc: Services, reason: disconnect.Disconnect) -> bytes:
    retry = svc.settings.sse_retry_ms
    if reason is disconnect.SHUTDOWN:
        # Spread the reconnects of every client of this worker over a few seconds.
        retry = random.randint(500, max(1000, 2 * retry))
    return sse_retry(retry) + disconnect_frame(reason).sse


def _response(body: AsyncIterable[bytes]) -> Response:
    response = Response(body, status=200, content_type="text/event-stream; charset=utf-8")
    response.headers.update(SSE_HEADERS)
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would cut the stream
    return response


async def _draining(svc: Services) -> AsyncIterator[bytes]:
    yield _farewell(svc, disconnect.SHUTDOWN)


class _LeasedBody:
    """The stream's body; gives the connection lease back when Quart closes it, even if the
    stream never started (Quart closes a body it has entered whatever happens)."""

    def __init__(
        self, svc: Services, principal: Principal, lease: str, last_event_id: str | None
    ) -> None:
        self._svc = svc
        self._user_id = principal.user_id
        self._lease = lease
        self._stream = _stream(svc, principal, lease, last_event_id)

    def __aiter__(self) -> _LeasedBody:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._stream)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._svc.connection_limiter.release(self._user_id, self._lease)


async def _stream(
    svc: Services, principal: Principal, lease: str, last_event_id: str | None
) -> AsyncGenerator[bytes, None]:
    svc.connection_limiter.hold(principal.user_id, lease)
    # First bytes at once: proxies and Heroku's router wait for them.
    yield sse_retry(svc.settings.sse_retry_ms) + sse_comment("stream open")
    async with live_stream(svc, principal, "sse") as sub:
        async for batch in frames(
            sub,
            transport="sse",
            heartbeat_interval=svc.settings.heartbeat_interval_seconds,
            last_event_id=last_event_id,
            history=svc.history,
            metrics=svc.metrics,
        ):
            yield batch[0].sse if len(batch) == 1 else b"".join(f.sse for f in batch)
        reason = sub.close_reason or disconnect.INTERNAL_ERROR
        logger.debug("event stream ending: %s", reason.reason)
        yield _farewell(svc, reason)


@blueprint.get("/events")
@tag(["Live"])
@document_response(ErrorResponse, 401)
@document_response(ErrorResponse, 429)
async def events() -> Response:
    """Live events as `text/event-stream`; see docs/protocol.md for the messages."""
    svc = services()
    token = bearer_token(request.headers.get("Authorization")) or request.args.get("token")
    try:
        principal = await svc.verifier.verify(token)
    except AuthError:
        svc.metrics.rejected.labels(transport="sse", reason="invalid_token").inc()
        raise
    logs.bind(user_id=principal.user_id)
    if svc.lifecycle.draining:
        svc.metrics.rejected.labels(transport="sse", reason="server_restart").inc()
        return _response(_draining(svc))
    lease = uuid.uuid4().hex
    if not await svc.connection_limiter.acquire(principal.user_id, lease):
        svc.metrics.rejected.labels(transport="sse", reason="too_many_connections").inc()
        logger.info("event stream refused: too many connections")
        raise TooManyConnectionsError(retry_after=30)
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    return _response(_LeasedBody(svc, principal, lease, last_event_id))
