"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def first_completed(*coros: Coroutine[Any, Any, T]) -> T:
    """Run `coros` concurrently; return the first result, or raise the first error.

    The others are cancelled and awaited before this returns, so nothing outlives the call.
    Unlike a TaskGroup, a failure comes out as itself, not wrapped in an ExceptionGroup.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:  # a crash wins over a normal finish
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return done.pop().result()


def current_task_cancelling() -> bool:
    """True if someone asked the current task to stop.

    On Python 3.11 an `asyncio.timeout()` whose deadline passes just as the task is cancelled
    can turn that cancellation into a TimeoutError. Loops that retry on TimeoutError check
    this so that they still stop when asked to.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
