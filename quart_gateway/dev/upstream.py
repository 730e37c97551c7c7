"""Stand-ins for the upstream services, so that hydration works in the demo.

    GET /dev/upstream/internal/v1/batches/<id>/status          the result aggregator
    GET /dev/upstream/internal/v1/batches/<id>/pipeline-state  BOS (always 404)

scripts/dev points RESULT_AGGREGATOR_URL and BOS_URL at /dev/upstream. The aggregator answers
from the state the simulator keeps in the gateway's own Redis. Nested in the dev blueprint, so
it exists only in dev mode.
"""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import hide

from quart_gateway.dev import simulator
from quart_gateway.services import services

blueprint = Blueprint("upstream", __name__, url_prefix="/dev/upstream")


@blueprint.get("/internal/v1/batches/<batch_id>/status")
@hide
async def upstream_status(batch_id: str) -> ResponseReturnValue:
    """Answers like the result aggregator: `{batch_id, user_id, pipeline_state, last_updated}`."""
    record = await simulator.stored_status(services().redis, batch_id)
    if record is None:
        return {"detail": "batch not found"}, 404
    return record, 200


@blueprint.get("/internal/v1/batches/<batch_id>/pipeline-state")
@hide
async def upstream_pipeline_state(batch_id: str) -> ResponseReturnValue:
    """The stand-in orchestrator knows no more than the stand-in aggregator: always 404."""
    return {"detail": "batch not found"}, 404
