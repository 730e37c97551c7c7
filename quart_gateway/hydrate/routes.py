"""GET /v1/batches/{batch_id}/status: the JWT-secured hydrate endpoint."""

from __future__ import annotations

import logging
import re
from typing import Any

from quart import Blueprint, g, request
from quart_schema import document_response, security_scheme, tag

from quart_gateway.admission.auth import bearer_token
from quart_gateway.errors import GatewayError, UpstreamError
from quart_gateway.hydrate.batch_status import fetch_batch_status
from quart_gateway.ops import logs
from quart_gateway.schemas import BatchStatusResponse, ErrorResponse
from quart_gateway.services import services

logger = logging.getLogger(__name__)

blueprint = Blueprint("status", __name__)

BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class InvalidBatchIdError(GatewayError):
    status_code = 400
    code = "invalid_batch_id"
    message = (
        "batch_id must start with a letter or digit and have at most 128 characters: "
        "letters, digits, '.', '_', ':' or '-'"
    )


@blueprint.get("/v1/batches/<batch_id>/status")
@tag(["Status"])
@security_scheme([{"bearerAuth": []}])
@document_response(BatchStatusResponse, 200)
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 401)
@document_response(ErrorResponse, 403)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 429)
@document_response(ErrorResponse, 502)
@document_response(ErrorResponse, 503)
@document_response(ErrorResponse, 504)
async def get_batch_status(
    batch_id: str,
) -> Any:  # a pydantic model and a status; quart-schema serialises it
    """Batch status for its owner.

    Asks the result aggregator, and under `HANDLE_MISSING_BATCHES=query_bos` falls back to the
    batch orchestrator for batches not aggregated yet. A batch of another user is a 403 that
    does not name its owner. Call it after a stream's `connected` message to hydrate.
    """
    svc = services()
    principal = await svc.verifier.verify(bearer_token(request.headers.get("Authorization")))
    logs.bind(user_id=principal.user_id)
    if not BATCH_ID.fullmatch(batch_id):
        raise InvalidBatchIdError()
    logs.bind(batch_id=batch_id)  # only once valid: what a client sends is not logged raw
    await svc.rate_limiter.hit(principal.user_id)
    try:
        result = await fetch_batch_status(
            svc.http,
            svc.settings,
            batch_id=batch_id,
            user_id=principal.user_id,
            correlation_id=g.correlation_id,
        )
    except UpstreamError as exc:
        svc.metrics.upstream_errors.labels(code=exc.code).inc()
        raise
    logger.info("batch status served", extra={"status_source": result.status})
    return (
        BatchStatusResponse(
            batch_id=result.batch_id,
            pipeline_state=result.pipeline_state,
            last_updated=result.last_updated,
            status=result.status,
        ),
        200,
    )
