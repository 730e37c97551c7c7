"""/healthz (the process is alive), /readyz (it can serve live streams), /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import document_response, hide, tag

from quart_gateway.ops import metrics_group
from quart_gateway.ops.metrics import CONTENT_TYPE
from quart_gateway.redis_kinds import REDIS_FAILURES
from quart_gateway.schemas import HealthResponse, ReadinessResponse
from quart_gateway.services import services

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@tag(["Operations"])
@document_response(HealthResponse, 200)
async def healthz() -> Any:  # a pydantic model and a status; quart-schema serialises it
    """Liveness: the worker's event loop answers. Restart the process only if this fails."""
    return HealthResponse(status="ok"), 200


@blueprint.get("/readyz")
@tag(["Operations"])
@document_response(ReadinessResponse, 200)
@document_response(ReadinessResponse, 503)
async def readyz() -> Any:  # a pydantic model and a status; quart-schema serialises it
    """Readiness: Redis answers, the pub/sub listener is healthy, every background task runs,
    and the worker is not draining."""
    svc = services()
    try:
        async with asyncio.timeout(1.0):
            redis_ok = bool(await svc.redis.ping())
    except REDIS_FAILURES:
        redis_ok = False
    listener_ok = svc.mux.statistics().healthy
    draining = svc.lifecycle.draining
    tasks_down = list(svc.tasks.statistics().down)
    ready = redis_ok and listener_ok and not draining and not tasks_down
    body = ReadinessResponse(
        status="ready" if ready else "not_ready",
        redis=redis_ok,
        listener=listener_ok,
        draining=draining,
        tasks_down=tasks_down,
    )
    return body, 200 if ready else 503


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    """This worker's metrics; under `python -m quart_gateway` with several workers, the whole
    group's (ops/metrics_group.py)."""
    group = current_app.extensions.get(metrics_group.EXTENSION_KEY)
    if isinstance(group, metrics_group.GroupMetrics):
        return Response(group.render(), content_type=CONTENT_TYPE)
    return Response(services().metrics.render(), content_type=CONTENT_TYPE)
