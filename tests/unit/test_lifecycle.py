"""Lifecycle: the draining flag and waiting for the open streams to end."""

from __future__ import annotations

import asyncio
import time

from quart_gateway.live import disconnect
from quart_gateway.live.subscriber import Subscriber
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


class FakeMultiplexer:
    """Stands for the multiplexer: the subscribers it would hand to the lifecycle."""

    def __init__(self, subscribers: list[Subscriber]) -> None:
        self._subscribers = subscribers

    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers)


async def test_draining_spreads_the_closes_over_the_window() -> None:
    subs = [Subscriber(f"u{i}", max_events=10, max_bytes=10_000) for i in range(200)]
    closed_at: dict[int, float] = {}
    for i, sub in enumerate(subs):
        sub.on_close = lambda i=i: closed_at.setdefault(i, time.monotonic())
    lifecycle = Lifecycle()
    lifecycle.attach(FakeMultiplexer(subs))
    started = time.monotonic()
    lifecycle.start_draining(spread=0.5)
    assert lifecycle.draining  # new streams are refused at once
    await asyncio.sleep(0.05)
    assert 0 < len(closed_at) < len(subs)  # some closed, most still to come
    await asyncio.sleep(0.55)
    assert len(closed_at) == len(subs)
    offsets = sorted(t - started for t in closed_at.values())
    assert offsets[-1] <= 0.5 + 0.1
    # Spread out: each tenth of the window saw some of the closes.
    assert {int(o / 0.05) for o in offsets} >= set(range(10))
    assert all(sub.close_reason is disconnect.SHUTDOWN for sub in subs)


async def test_a_second_drain_without_spread_closes_the_rest_at_once() -> None:
    subs = [Subscriber(f"u{i}", max_events=10, max_bytes=10_000) for i in range(20)]
    lifecycle = Lifecycle()
    lifecycle.attach(FakeMultiplexer(subs))
    lifecycle.start_draining(spread=60)
    lifecycle.start_draining()  # the lifespan's teardown
    assert all(sub.close_reason is disconnect.SHUTDOWN for sub in subs)
