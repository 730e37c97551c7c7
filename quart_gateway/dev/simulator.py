"""The demo's batch runs: the events the services would publish, with the state they imply.

A run publishes through `publishers` to the gateway's own Redis, as the real services would,
and keeps the batch state there too (`STATE_PREFIX`), where the stand-in result aggregator
(`dev/upstream.py`) reads it. Runs are background tasks of this worker: `start()` begins one,
`cancel_all()` ends them when the worker stops serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import suppress
from typing import Any

from events.catalog import utc_now_iso
from publishers import (
    BatchOrchestratorPublisher,
    EssayLifecyclePublisher,
    EventPublisher,
    FileServicePublisher,
)
from quart_gateway.redis_kinds import RedisClient

logger = logging.getLogger(__name__)

STATE_PREFIX = "dev-demo:batch:"
STATE_TTL_SECONDS = 86_400

_runs: set[asyncio.Task[None]] = set()


class BatchRun:
    """A batch run as the services would publish it, with its state kept for the stand-ins.

    Every step updates the state first and publishes after, so a client that hydrates on an
    event sees at least that event's effect.
    """

    ESSAYS = ("essay-1", "essay-2", "essay-3")
    STEP_SECONDS = 0.7

    def __init__(
        self, redis: RedisClient, user_id: str, batch_id: str, *, step_seconds: float
    ) -> None:
        self._redis = redis
        self._user_id = user_id
        self.batch_id = batch_id
        self._step_seconds = step_seconds
        self._publisher = EventPublisher(redis)
        self._state: dict[str, Any] = {
            "phase": "file_upload",
            "locked": False,
            "essays": {},
            "spellcheck": "pending",
        }

    async def run(self) -> None:
        files = FileServicePublisher(self._publisher)
        orchestrator = BatchOrchestratorPublisher(self._publisher)
        essays = EssayLifecyclePublisher(self._publisher)
        batch, user = self.batch_id, self._user_id
        await self._save()
        for essay in self.ESSAYS:
            await self._step(essays={**self._state["essays"], essay: "uploaded"})
            await files.publish_file_added_event(batch, essay, f"{essay}.docx", user)
        await self._step(phase="spellcheck", locked=True, spellcheck="running")
        await orchestrator.publish_phase_initiated_event(batch, "spellcheck", user)
        for essay in self.ESSAYS:
            await self._step(essays={**self._state["essays"], essay: "spellchecked_success"})
            await essays.publish_essay_status_updated_event(
                batch, essay, "spellchecked_success", user, phase="spellcheck"
            )
        await self._step(spellcheck="completed", phase="completed")
        await orchestrator.publish_batch_phase_concluded_event(
            batch, "spellcheck", "completed", user
        )

    async def _step(self, **changes: Any) -> None:
        await asyncio.sleep(self._step_seconds)
        self._state.update(changes)
        await self._save()

    async def _save(self) -> None:
        now = utc_now_iso()
        self._state["last_updated"] = now
        record = {
            "batch_id": self.batch_id,
            "user_id": self._user_id,
            "pipeline_state": self._state,
            "last_updated": now,
        }
        await self._redis.set(
            STATE_PREFIX + self.batch_id, json.dumps(record), ex=STATE_TTL_SECONDS
        )


async def stored_status(redis: RedisClient, batch_id: str) -> dict[str, Any] | None:
    """The last state a run saved for `batch_id`, as the result aggregator answers it."""
    raw = await redis.get(STATE_PREFIX + batch_id)
    if raw is None:
        return None
    record: dict[str, Any] = json.loads(raw)
    return record


def start(redis: RedisClient, user_id: str, *, step_seconds: float) -> str:
    """Start a run for `user_id` in the background; returns its batch id."""
    batch_id = f"batch-{uuid.uuid4().hex[:8]}"
    run = BatchRun(redis, user_id, batch_id, step_seconds=step_seconds)
    task = asyncio.create_task(_run_batch(run), name=f"demo {batch_id}")
    _runs.add(task)
    task.add_done_callback(_runs.discard)
    return batch_id


async def cancel_all() -> None:
    for task in list(_runs):
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _run_batch(run: BatchRun) -> None:
    try:
        await run.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("demo batch run failed", extra={"batch_id": run.batch_id})
