"""first_completed and current_task_cancelling."""

from __future__ import annotations

import asyncio

import pytest

from quart_gateway.aio.concurrency import current_task_cancelling, first_completed


class CrashError(Exception):
    pass


async def value(result: str, delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    return result


async def crash(delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    raise CrashError("crashed")


async def test_the_first_result_is_returned_and_the_others_are_cancelled_and_awaited() -> None:
    cleaned_up: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.append("slow")  # before first_completed returns, not later
        return "slow"

    async with asyncio.timeout(5):
        assert await first_completed(value("fast"), slow()) == "fast"
    assert cleaned_up == ["slow"]


async def test_a_crash_comes_out_as_itself() -> None:
    with pytest.raises(CrashError, match="crashed"):  # not wrapped in an ExceptionGroup
        async with asyncio.timeout(5):
            await first_completed(crash(), value("slow", 30))


async def test_a_crash_wins_over_a_result_in_the_same_round() -> None:
    for _ in range(5):  # whatever order the tasks happen to finish in
        with pytest.raises(CrashError):
            await first_completed(value("ok"), crash())
        with pytest.raises(CrashError):
            await first_completed(crash(), value("ok"))


async def test_cancelling_the_caller_cancels_and_awaits_every_coroutine() -> None:
    cleaned_up: list[int] = []

    async def forever(n: int) -> str:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.append(n)
        return "never"

    caller = asyncio.create_task(first_completed(forever(1), forever(2)))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(cleaned_up) == [1, 2]


async def test_current_task_cancelling_tells_a_stop_request_from_a_timeout() -> None:
    seen: list[tuple[str, bool]] = []
    started = asyncio.Event()

    async def worker() -> None:
        seen.append(("running", current_task_cancelling()))
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(30)
        except TimeoutError:
            seen.append(("after its own timeout", current_task_cancelling()))
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(("asked to stop", current_task_cancelling()))
            raise

    task = asyncio.create_task(worker())
    async with asyncio.timeout(5):
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen == [
        ("running", False),
        ("after its own timeout", False),
        ("asked to stop", True),
    ]
