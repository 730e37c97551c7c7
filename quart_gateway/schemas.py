"""REST response bodies (pydantic at the trust boundary; quart-schema documents them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class BatchStatusResponse(BaseModel):
    batch_id: str
    pipeline_state: Any = Field(
        description="Pipeline state as the source reports it, owner ids removed"
    )
    last_updated: str | None = Field(description="ISO 8601 time of the last state change, if known")
    status: Literal["available", "pending_aggregation"] = Field(
        description="`available`: from the result aggregator. `pending_aggregation`: the "
        "aggregator does not know the batch yet; this is the orchestrator's view."
    )


class StreamTicketResponse(BaseModel):
    ticket: str = Field(
        description="Opaque single-use credential for `/ws?ticket=` or `/events?ticket=`"
    )
    expires_in: int = Field(description="Seconds the ticket stays valid if unused")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `forbidden`")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadinessResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    redis: bool = Field(description="Redis answers PING")
    listener: bool = Field(description="The pub/sub listener is connected and hearing from Redis")
    draining: bool
    tasks_down: list[str] = Field(
        default_factory=list,
        description="Background tasks that failed and wait to be restarted (not ready while any)",
    )
