"""One model per event type, and the registry the gateway uses as its allow-list.

Domain events are what backend services publish (the origin design's eleven types). System
events are what the gateway itself sends on a stream (`connected`, `ping`, `resync`,
`disconnect`). Both share the flat wire shape: `event` discriminates, fields sit beside it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Event(BaseModel):
    """Common base: flat shape, an ISO timestamp and, once stored in history, a stream id."""

    # Unknown fields are kept: a newer publisher may add fields an older gateway forwards as-is.
    model_config = ConfigDict(extra="allow", frozen=True)

    event: str
    timestamp: str = Field(default_factory=utc_now_iso, description="ISO 8601, UTC")
    id: str | None = Field(
        default=None,
        description="History id (Redis Stream id) when published through `publishers`; "
        "absent on legacy bare-PUBLISH events and on system events.",
    )


# --- domain events (batch orchestrator) -------------------------------------------------------


class BatchPhaseConcluded(Event):
    event: Literal["batch_phase_concluded"] = "batch_phase_concluded"
    batch_id: str
    phase: str = Field(description="Pipeline phase, lowercase as the orchestrator's enum")
    status: str = Field(description="Phase outcome, lowercase as the orchestrator's enum")


class BatchLockedForProcessing(Event):
    event: Literal["batch_locked_for_processing"] = "batch_locked_for_processing"
    batch_id: str
    locked_at: str = Field(default_factory=utc_now_iso)
    reason: str = "Spellcheck started - no further file modifications allowed"


# --- essay lifecycle ------------------------------------------------------------------------


class EssayStatusUpdated(Event):
    event: Literal["essay_status_updated"] = "essay_status_updated"
    batch_id: str
    essay_id: str
    status: str
    phase: str | None = None


# --- file service ---------------------------------------------------------------------------


class BatchFileAdded(Event):
    event: Literal["batch_file_added"] = "batch_file_added"
    batch_id: str
    essay_id: str
    filename: str


class BatchFileRemoved(Event):
    event: Literal["batch_file_removed"] = "batch_file_removed"
    batch_id: str
    essay_id: str
    filename: str


class StudentParsingCompleted(Event):
    event: Literal["student_parsing_completed"] = "student_parsing_completed"
    batch_id: str
    parsed_count: int = Field(ge=0)
    total_count: int = Field(ge=0)


# --- class management -----------------------------------------------------------------------


class EssayStudentAssociationUpdated(Event):
    event: Literal["essay_student_association_updated"] = "essay_student_association_updated"
    batch_id: str
    essay_id: str
    student_id: str
    association_method: str


class ClassCreated(Event):
    event: Literal["class_created"] = "class_created"
    class_id: str
    class_designation: str


class ClassUpdated(Event):
    event: Literal["class_updated"] = "class_updated"
    class_id: str
    class_designation: str


class StudentCreated(Event):
    event: Literal["student_created"] = "student_created"
    student_id: str
    student_name: str
    student_email: str | None = None


class StudentUpdated(Event):
    event: Literal["student_updated"] = "student_updated"
    student_id: str
    student_name: str
    student_email: str | None = None


# --- system events (sent by the gateway) ----------------------------------------------------


class Connected(Event):
    """First message on every stream, sent once the live subscription is active.

    Hydrate through the status endpoint *after* this message: nothing published from now on
    can be missed.
    """

    event: Literal["connected"] = "connected"
    connection_id: str
    transport: Literal["ws", "sse"]
    heartbeat_interval: float = Field(description="Seconds between `ping` messages")
    cursor: str | None = Field(
        default=None,
        description="Position in the user's history from which nothing can be missed: resume "
        "from it (`last_event_id`) if the stream ends before any event arrives. On SSE it is "
        "also the frame's `id:`, so EventSource sends it as `Last-Event-ID` by itself. Absent "
        "when the history could not be read.",
    )


class Ping(Event):
    event: Literal["ping"] = "ping"


class Resync(Event):
    """Events may have been missed: re-hydrate through the status endpoint."""

    event: Literal["resync"] = "resync"
    reason: Literal["redis_reconnected", "history_unavailable"]
    cursor: str | None = Field(
        default=None,
        description="The new resume position after re-hydrating, as in `connected`.",
    )


class Disconnect(Event):
    """Last message before the gateway ends a stream; mirrors the WebSocket close code."""

    event: Literal["disconnect"] = "disconnect"
    code: int
    reason: str
    reconnect: bool = Field(description="Whether the client should reconnect")
    retry_ms: int | None = Field(
        default=None,
        description="How long to wait before reconnecting, in milliseconds, when the gateway "
        "asks for a delay (restart, overload): jittered, so that clients come back spread out.",
    )


DOMAIN_EVENT_MODELS: tuple[type[Event], ...] = (
    BatchPhaseConcluded,
    EssayStatusUpdated,
    BatchFileAdded,
    BatchFileRemoved,
    BatchLockedForProcessing,
    StudentParsingCompleted,
    EssayStudentAssociationUpdated,
    ClassCreated,
    ClassUpdated,
    StudentCreated,
    StudentUpdated,
)
SYSTEM_EVENT_MODELS: tuple[type[Event], ...] = (Connected, Ping, Resync, Disconnect)


def _event_name(model: type[Event]) -> str:
    default = model.model_fields["event"].default
    assert isinstance(default, str)
    return default


EVENT_MODELS: dict[str, type[Event]] = {
    _event_name(m): m for m in DOMAIN_EVENT_MODELS + SYSTEM_EVENT_MODELS
}
DOMAIN_EVENT_TYPES: frozenset[str] = frozenset(_event_name(m) for m in DOMAIN_EVENT_MODELS)
SYSTEM_EVENT_TYPES: frozenset[str] = frozenset(_event_name(m) for m in SYSTEM_EVENT_MODELS)
# What the gateway forwards from Redis: events that backend services may publish.
REGISTERED_EVENT_TYPES: frozenset[str] = DOMAIN_EVENT_TYPES

AnyEvent = Annotated[
    BatchPhaseConcluded
    | EssayStatusUpdated
    | BatchFileAdded
    | BatchFileRemoved
    | BatchLockedForProcessing
    | StudentParsingCompleted
    | EssayStudentAssociationUpdated
    | ClassCreated
    | ClassUpdated
    | StudentCreated
    | StudentUpdated
    | Connected
    | Ping
    | Resync
    | Disconnect,
    Field(discriminator="event"),
]
_ANY_EVENT: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(data: Any) -> Event:
    """Validate a decoded JSON object against its model (raises pydantic.ValidationError)."""
    result = _ANY_EVENT.validate_python(data)
    assert isinstance(result, Event)
    return result
