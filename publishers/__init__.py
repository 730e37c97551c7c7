"""Publish typed live events to browser users through the gateway.

    from publishers import EventPublisher, BatchOrchestratorPublisher

    async with EventPublisher.from_url(os.environ["REDIS_URL"]) as publisher:
        event_id = await BatchOrchestratorPublisher(publisher).publish_batch_phase_concluded_event(
            batch_id, "spellcheck", "completed", user_id
        )

See docs/publishing.md. This library configures no logging.
"""

from __future__ import annotations

from publishers._domain import (
    BatchOrchestratorPublisher,
    ClassManagementPublisher,
    EssayLifecyclePublisher,
    FileServicePublisher,
)
from publishers._errors import InvalidEventError, PublishError
from publishers._publisher import EventPublisher

__all__ = [
    "BatchOrchestratorPublisher",
    "ClassManagementPublisher",
    "EssayLifecyclePublisher",
    "EventPublisher",
    "FileServicePublisher",
    "InvalidEventError",
    "PublishError",
]
