"""Publish the live events of one batch run, as the backend services would.

    REDIS_URL=redis://localhost:6379/0 python docs/examples/publish_batch_run.py demo-user b-42

Each call validates the event against its `events` model, stores it in the user's history and
publishes it to `ws:{user_id}`; it returns the event's id.
"""

from __future__ import annotations

import asyncio
import os
import sys

from publishers import (
    BatchOrchestratorPublisher,
    EssayLifecyclePublisher,
    EventPublisher,
    FileServicePublisher,
    PublishError,
)


async def publish_batch_run(redis_url: str, user_id: str, batch_id: str) -> list[str]:
    async with EventPublisher.from_url(redis_url) as publisher:
        files = FileServicePublisher(publisher)
        orchestrator = BatchOrchestratorPublisher(publisher)
        essays = EssayLifecyclePublisher(publisher)
        ids = [
            await files.publish_file_added_event(batch_id, "essay-1", "essay-1.docx", user_id),
            await files.publish_file_added_event(batch_id, "essay-2", "essay-2.docx", user_id),
        ]
        # The orchestrator starts spellcheck: the batch is locked against file changes.
        locked = await orchestrator.publish_phase_initiated_event(batch_id, "spellcheck", user_id)
        assert locked is not None
        ids.append(locked)
        for essay in ("essay-1", "essay-2"):
            ids.append(
                await essays.publish_essay_status_updated_event(
                    batch_id, essay, "spellchecked_success", user_id, phase="spellcheck"
                )
            )
        ids.append(
            await orchestrator.publish_batch_phase_concluded_event(
                batch_id, "spellcheck", "completed", user_id
            )
        )
        return ids


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    redis_url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    try:
        ids = asyncio.run(publish_batch_run(redis_url, sys.argv[1], sys.argv[2]))
    except PublishError as exc:
        print(f"not published: {exc}", file=sys.stderr)
        return 1
    print("\n".join(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
