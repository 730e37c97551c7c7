"""POST /v1/stream-tickets: trade a JWT (in a header) for a single-use stream ticket."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request
from quart_schema import document_response, security_scheme, tag

from quart_gateway.admission.auth import bearer_token
from quart_gateway.ops import logs
from quart_gateway.schemas import ErrorResponse, StreamTicketResponse
from quart_gateway.services import services

blueprint = Blueprint("stream_tickets", __name__)


@blueprint.post("/v1/stream-tickets")
@tag(["Streams"])
@security_scheme([{"bearerAuth": []}])
@document_response(StreamTicketResponse, 201)
@document_response(ErrorResponse, 401)
@document_response(ErrorResponse, 429)
@document_response(ErrorResponse, 503)
async def post_stream_ticket() -> Any:  # a pydantic model and a status; quart-schema serialises it
    """A ticket that opens one stream for the token's user: `/ws?ticket=` or `/events?ticket=`.

    The JWT travels only in the `Authorization` header, never in a URL. The ticket works once
    (on any worker or host), within `expires_in` seconds; the stream still ends at the JWT's
    `exp`. Rate-limited per user (`STREAM_TICKET_RATE_LIMIT`). Ask for a new ticket before
    every connection attempt.
    """
    svc = services()
    principal = await svc.verifier.verify(bearer_token(request.headers.get("Authorization")))
    logs.bind(user_id=principal.user_id)
    await svc.ticket_rate_limiter.hit(principal.user_id)
    ticket, expires_in = await svc.tickets.issue(principal)
    return StreamTicketResponse(ticket=ticket, expires_in=expires_in), 201
