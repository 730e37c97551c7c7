"""Lifecycle: the draining flag and waiting for the open streams to end."""

from __future__ import annotations

import asyncio
import time

from quart_gateway.serving.lifecycle import Lifecycle


def test_draining_starts_once_and_stays() -> None:
    lifecycle = Lifecycle()
    assert not lifecycle.draining
    lifecycle.start_draining()
    assert lifecycle.draining
    lifecycle.start_draining()  # a second SIGTERM changes nothing
    assert lifecycle.draining


async def test_wait_drained_is_true_at_once_without_streams() -> None:
    lifecycle = Lifecycle()
    lifecycle.stream_opened()
    lifecycle.stream_closed()
    async with asyncio.timeout(1):
        assert await lifecycle.wait_drained(timeout=30)


async def test_wait_drained_returns_when_the_last_stream_ends() -> None:
    lifecycle = Lifecycle()
    lifecycle.stream_opened()
    lifecycle.stream_opened()
    waiter = asyncio.create_task(lifecycle.wait_drained(timeout=30))
    lifecycle.stream_closed()
    await asyncio.sleep(0.01)
    assert not waiter.done()  # one stream is still open
    lifecycle.stream_closed()
    async with asyncio.timeout(1):
        assert await waiter


async def test_wait_drained_gives_up_after_the_timeout() -> None:
    lifecycle = Lifecycle()
    lifecycle.stream_opened()
    started = time.monotonic()
    assert not await lifecycle.wait_drained(timeout=0.1)
    assert 0.1 <= time.monotonic() - started < 1


async def test_closing_more_streams_than_were_opened_does_not_hide_a_new_one() -> None:
    lifecycle = Lifecycle()
    lifecycle.stream_closed()  # e.g. a cleanup that ran twice
    lifecycle.stream_opened()
    assert not await lifecycle.wait_drained(timeout=0.05)
    lifecycle.stream_closed()
    assert await lifecycle.wait_drained(timeout=0.05)
