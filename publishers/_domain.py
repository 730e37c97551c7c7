"""Domain publishers with the origin design's method names, so services can drop them in.

Each takes the `EventPublisher` and returns the published event's id. Phase and status values
are accepted as strings or enums, in any case: the orchestrator's real enums are lowercase.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any

from pydantic import ValidationError

from events import (
    BatchFileAdded,
    BatchFileRemoved,
    BatchLockedForProcessing,
    BatchPhaseConcluded,
    ClassCreated,
    ClassUpdated,
    EssayStatusUpdated,
    EssayStudentAssociationUpdated,
    StudentCreated,
    StudentParsingCompleted,
    StudentUpdated,
)
from publishers._errors import InvalidEventError
from publishers._publisher import EventPublisher, require_user_id

SPELLCHECK_PHASE = "spellcheck"


def enum_value(value: object) -> str:
    """`Phase.SPELLCHECK`, `"SPELLCHECK"` and `"spellcheck"` all become `"spellcheck"`.

    Accepts a string or an enum member whose value is a string; InvalidEventError otherwise.
    """
    raw = value.value if isinstance(value, Enum) else value
    if not isinstance(raw, str):
        raise InvalidEventError(f"expected a string or a string enum, not {type(raw).__name__}")
    return raw.strip().lower()


@contextmanager
def _validating() -> Iterator[None]:
    """Turn pydantic's ValidationError, raised by building an event, into InvalidEventError."""
    try:
        yield
    except ValidationError as exc:
        raise InvalidEventError(f"invalid event: {exc}") from exc


def _student_name(result: object) -> object:
    if isinstance(result, Mapping):
        return result.get("student_name")
    return getattr(result, "student_name", None)


def _parsed_counts(parsing_results: Iterable[Any]) -> tuple[int, int]:
    """(results with a student name, all results); InvalidEventError if not iterable."""
    try:
        results = list(parsing_results)
        return sum(1 for r in results if _student_name(r)), len(results)
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"parsing_results: {exc}") from exc


class FileServicePublisher:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def publish_file_added_event(
        self, batch_id: str, essay_id: str, filename: str, user_id: str
    ) -> str:
        with _validating():
            event = BatchFileAdded(batch_id=batch_id, essay_id=essay_id, filename=filename)
        return await self._publisher.publish(user_id, event)

    async def publish_file_removed_event(
        self, batch_id: str, essay_id: str, filename: str, user_id: str
    ) -> str:
        with _validating():
            event = BatchFileRemoved(batch_id=batch_id, essay_id=essay_id, filename=filename)
        return await self._publisher.publish(user_id, event)

    async def publish_student_parsing_completed_event(
        self, batch_id: str, parsing_results: Iterable[Any], user_id: str
    ) -> str:
        """`parsing_results`: objects or mappings with a `student_name` (empty = not parsed)."""
        parsed, total = _parsed_counts(parsing_results)
        with _validating():
            event = StudentParsingCompleted(
                batch_id=batch_id, parsed_count=parsed, total_count=total
            )
        return await self._publisher.publish(user_id, event)


class ClassManagementPublisher:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def publish_class_created_event(
        self, class_id: str, class_designation: str, user_id: str
    ) -> str:
        with _validating():
            event = ClassCreated(class_id=class_id, class_designation=class_designation)
        return await self._publisher.publish(user_id, event)

    async def publish_class_updated_event(
        self, class_id: str, class_designation: str, user_id: str
    ) -> str:
        with _validating():
            event = ClassUpdated(class_id=class_id, class_designation=class_designation)
        return await self._publisher.publish(user_id, event)

    async def publish_student_created_event(
        self, student_id: str, student_name: str, student_email: str | None, user_id: str
    ) -> str:
        with _validating():
            event = StudentCreated(
                student_id=student_id, student_name=student_name, student_email=student_email
            )
        return await self._publisher.publish(user_id, event)

    async def publish_student_updated_event(
        self, student_id: str, student_name: str, student_email: str | None, user_id: str
    ) -> str:
        with _validating():
            event = StudentUpdated(
                student_id=student_id, student_name=student_name, student_email=student_email
            )
        return await self._publisher.publish(user_id, event)

    async def publish_essay_student_association_event(
        self, batch_id: str, essay_id: str, student_id: str, association_method: str, user_id: str
    ) -> str:
        with _validating():
            event = EssayStudentAssociationUpdated(
                batch_id=batch_id,
                essay_id=essay_id,
                student_id=student_id,
                association_method=association_method,
            )
        return await self._publisher.publish(user_id, event)


class BatchOrchestratorPublisher:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def publish_batch_phase_concluded_event(
        self, batch_id: str, phase: Any, status: Any, user_id: str
    ) -> str:
        with _validating():
            event = BatchPhaseConcluded(
                batch_id=batch_id, phase=enum_value(phase), status=enum_value(status)
            )
        return await self._publisher.publish(user_id, event)

    async def publish_phase_initiated_event(
        self, batch_id: str, phase: Any, user_id: str
    ) -> str | None:
        """Call when a pipeline phase starts. When spellcheck starts, the batch is locked:
        publishes `batch_locked_for_processing` and returns its id; other phases publish
        nothing and return None."""
        require_user_id(user_id)  # refused for every phase, not only when publishing
        if enum_value(phase) != SPELLCHECK_PHASE:
            return None
        return await self.publish_batch_locked_event(batch_id, user_id)

    async def publish_batch_locked_event(
        self,
        batch_id: str,
        user_id: str,
        reason: str = "Spellcheck started - no further file modifications allowed",
    ) -> str:
        with _validating():
            event = BatchLockedForProcessing(batch_id=batch_id, reason=reason)
        return await self._publisher.publish(user_id, event)


class EssayLifecyclePublisher:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def publish_essay_status_updated_event(
        self, batch_id: str, essay_id: str, status: Any, user_id: str, phase: Any = None
    ) -> str:
        with _validating():
            event = EssayStatusUpdated(
                batch_id=batch_id,
                essay_id=essay_id,
                status=enum_value(status),
                phase=None if phase is None else enum_value(phase),
            )
        return await self._publisher.publish(user_id, event)
