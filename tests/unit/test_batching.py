from __future__ import annotations

import asyncio

import pytest

from quart_gateway.aio.batching import Batcher


async def test_concurrent_calls_share_round_trips_and_keep_their_results() -> None:
    batches: list[list[int]] = []

    async def run(requests: list[int]) -> list[int]:
        batches.append(requests)
        await asyncio.sleep(0.01)
        return [r * 10 for r in requests]

    batcher: Batcher[int, int] = Batcher(run, limit=20)
    results = await asyncio.gather(*(batcher.call(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert len(batches) <= 4  # 1 alone, then the rest in batches of at most 20
    assert all(len(b) <= 20 for b in batches)
    assert sorted(r for b in batches for r in b) == list(range(50))


async def test_a_failed_batch_fails_its_callers_only() -> None:
    calls = 0

    async def run(requests: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return requests

    batcher: Batcher[str, str] = Batcher(run, limit=10)
    with pytest.raises(ConnectionError):
        await batcher.call("a")
    assert await batcher.call("b") == "b"


async def test_a_caller_that_left_is_skipped() -> None:
    seen: list[list[str]] = []
    gate = asyncio.Event()

    async def run(requests: list[str]) -> list[str]:
        seen.append(requests)
        await gate.wait()
        return requests

    batcher: Batcher[str, str] = Batcher(run, limit=10)
    first = asyncio.create_task(batcher.call("first"))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(batcher.call("leaving"))
    staying = asyncio.create_task(batcher.call("staying"))
    await asyncio.sleep(0)
    leaving.cancel()
    gate.set()
    assert await first == "first"
    assert await staying == "staying"
    assert seen == [["first"], ["staying"]]


class RefusedError(Exception):
    """Stands for an error the server answered about one request (a Redis ResponseError)."""


async def _batch_with_one_bad_member(isolate: tuple[type[Exception], ...]) -> list[object]:
    gate = asyncio.Event()

    async def run(requests: list[str]) -> list[str]:
        await gate.wait()
        if "bad" in requests:
            raise RefusedError("bad request")
        return [r.upper() for r in requests]

    batcher: Batcher[str, str] = Batcher(run, limit=10, isolate=isolate)
    first = asyncio.create_task(batcher.call("first"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.call(r)) for r in ("a", "bad", "b")]
    await asyncio.sleep(0)
    gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


async def test_a_bad_request_does_not_fail_its_neighbours() -> None:
    first, a, bad, b = await _batch_with_one_bad_member(isolate=(RefusedError,))
    assert (first, a, b) == ("FIRST", "A", "B")
    assert isinstance(bad, RefusedError)


async def test_without_isolation_the_whole_batch_fails() -> None:
    first, a, bad, b = await _batch_with_one_bad_member(isolate=())
    assert first == "FIRST"
    assert all(isinstance(r, RefusedError) for r in (a, bad, b))
