"""The hydrate read path: aggregator first, batch orchestrator (BOS) as fallback, ownership.

Pure decisions (`from_aggregator`, `from_bos`, `strip_user_ids`) are kept apart from the two
HTTP calls in `fetch_batch_status`, so each rule has a unit test of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from quart_gateway.errors import (
    ForbiddenError,
    NotFoundError,
    OwnershipUnknownError,
    UpstreamUnavailableError,
)
from quart_gateway.hydrate.upstream import get_json
from quart_gateway.settings import Settings

logger = logging.getLogger(__name__)

OWNER_FIELD = "user_id"


@dataclass(frozen=True, slots=True)
class BatchStatus:
    batch_id: str
    pipeline_state: Any
    last_updated: str | None
    status: Literal["available", "pending_aggregation"]


def strip_user_ids(value: Any) -> Any:
    """A copy of `value` with every `user_id` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: strip_user_ids(v) for k, v in value.items() if k != OWNER_FIELD}
    if isinstance(value, list):
        return [strip_user_ids(v) for v in value]
    return value


def check_owner(body: dict[str, Any], user_id: str, *, batch_id: str, source: str) -> None:
    """Fail closed: a missing owner is a server-side fault, a different owner is a 403."""
    owner = body.get(OWNER_FIELD)
    if owner is None or (isinstance(owner, str) and not owner.strip()):
        logger.error("%s answered without an owner for the batch", source)
        raise OwnershipUnknownError()
    if str(owner) != user_id:
        # The owner's id is logged for the operators, never returned to the client.
        logger.warning("ownership violation", extra={"owner_id": str(owner), "source": source})
        raise ForbiddenError()


def _require_object(body: Any, source: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        logger.warning("%s answered with a non-object body", source)
        raise UpstreamUnavailableError()
    return body


def from_aggregator(body: Any, user_id: str, batch_id: str) -> BatchStatus:
    data = _require_object(body, "result_aggregator")
    check_owner(data, user_id, batch_id=batch_id, source="result_aggregator")
    if "pipeline_state" not in data:
        logger.warning("result_aggregator answered without pipeline_state")
        raise UpstreamUnavailableError()
    last_updated = data.get("last_updated")
    return BatchStatus(
        batch_id=str(data.get("batch_id") or batch_id),
        pipeline_state=strip_user_ids(data["pipeline_state"]),
        last_updated=None if last_updated is None else str(last_updated),
        status="available",
    )


def from_bos(body: Any, user_id: str, batch_id: str) -> BatchStatus:
    """Accept the real nested shape `{batch_id, user_id, pipeline_state: {...}}` and a flat one."""
    data = _require_object(body, "batch_orchestrator")
    check_owner(data, user_id, batch_id=batch_id, source="batch_orchestrator")
    nested = data.get("pipeline_state")
    if isinstance(nested, dict):
        state = nested
    else:
        state = {k: v for k, v in data.items() if k not in ("batch_id", OWNER_FIELD)}
    last_updated = state.get("last_updated") or data.get("updated_at") or state.get("updated_at")
    return BatchStatus(
        batch_id=str(data.get("batch_id") or batch_id),
        pipeline_state=strip_user_ids(state),
        last_updated=None if last_updated is None else str(last_updated),
        status="pending_aggregation",
    )


async def fetch_batch_status(
    client: httpx.AsyncClient,
    settings: Settings,
    *,
    batch_id: str,
    user_id: str,
    correlation_id: str,
) -> BatchStatus:
    path_id = quote(batch_id, safe="")

    async def ask(service: str, url: str) -> tuple[int, Any]:
        return await get_json(
            client,
            url,
            timeout=settings.upstream_timeout_seconds,
            max_bytes=settings.upstream_max_body_bytes,
            correlation_id=correlation_id,
            service=service,
        )

    aggregator = f"{settings.result_aggregator_url}/internal/v1/batches/{path_id}/status"
    status, body = await ask("result_aggregator", aggregator)
    if status == 200:
        return from_aggregator(body, user_id, batch_id)
    if status != 404:
        logger.warning("result_aggregator answered %d", status, extra={"upstream_status": status})
        raise UpstreamUnavailableError()
    if settings.handle_missing_batches == "return_404":
        logger.info("batch not in result_aggregator; HANDLE_MISSING_BATCHES=return_404")
        raise NotFoundError()

    logger.info("batch not in result_aggregator; asking batch_orchestrator")
    bos = f"{settings.bos_url}/internal/v1/batches/{path_id}/pipeline-state"
    status, body = await ask("batch_orchestrator", bos)
    if status == 200:
        return from_bos(body, user_id, batch_id)
    if status == 404:
        raise NotFoundError()
    logger.warning("batch_orchestrator answered %d", status, extra={"upstream_status": status})
    raise UpstreamUnavailableError()
