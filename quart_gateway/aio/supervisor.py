"""Per-worker background loops that cannot die silently.

Each loop (lease flusher, lease renewal, heartbeat, ...) is written to catch, log and count
what goes wrong in one round and go on. `TaskSupervisor` is the second line: if a loop still
raises, it is logged with its traceback, counted (`gateway_task_failures_total{task}`) and
started again after a jittered backoff. While a loop waits to be restarted it is *down*, and
`/readyz` says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quart_gateway.aio.backoff import Backoff

logger = logging.getLogger(__name__)

# A loop that ran this long before failing counts as healthy: its backoff starts over.
STABLE_AFTER_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    running: tuple[str, ...]
    down: tuple[str, ...]
    failures: int


class TaskSupervisor:
    def __init__(self, on_failure: Callable[[str], object] = lambda name: None) -> None:
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()
        self._failures = 0

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop()` until `stop()`, restarting it whenever it raises or returns."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        self._tasks[name] = asyncio.create_task(self._keep_running(name, loop), name=name)

    async def stop(self, timeout: float = 2.0) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            running=tuple(sorted(set(self._tasks) - self._down)),
            down=tuple(sorted(self._down)),
            failures=self._failures,
        )

    async def _keep_running(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            started = time.monotonic()
            try:
                await loop()
                logger.error("background task %s returned; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("background task %s failed; restarting it", name)
            self._failures += 1
            self._on_failure(name)
            if time.monotonic() - started >= STABLE_AFTER_SECONDS:
                backoff.reset()
            self._down.add(name)
            try:
                await asyncio.sleep(backoff.next_delay())
            finally:
                self._down.discard(name)
