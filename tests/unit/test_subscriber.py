from __future__ import annotations

import asyncio
import json

from quart_gateway.live import disconnect
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import Frame, make_frame


def frame(n: int = 0, pad: int = 0) -> Frame:
    return make_frame(json.dumps({"event": "ping", "n": n, "pad": "x" * pad}))


async def test_get_hands_over_everything_queued_in_order() -> None:
    sub = Subscriber("u", max_events=10, max_bytes=10_000)
    frames = [frame(i) for i in range(3)]
    for f in frames:
        assert sub.offer(f)
    assert await sub.get() == frames
    assert sub.statistics().queued_events == 0
    assert sub.statistics().delivered == 3


async def test_get_waits_for_a_frame() -> None:
    sub = Subscriber("u", max_events=10, max_bytes=10_000)
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    f = frame()
    sub.offer(f)
    assert await asyncio.wait_for(waiter, 1) == [f]


async def test_overflow_by_count_closes_as_slow_consumer() -> None:
    sub = Subscriber("u", max_events=2, max_bytes=10_000)
    assert sub.offer(frame())
    assert sub.offer(frame())
    assert not sub.offer(frame())
    assert sub.close_reason is disconnect.SLOW_CONSUMER
    assert sub.overflow_depth[0] == 2
    assert sub.statistics().queued_events == 0  # memory released at once
    assert await sub.get() == []


async def test_overflow_by_bytes() -> None:
    big = frame(pad=600)
    sub = Subscriber("u", max_events=100, max_bytes=1000)
    assert sub.offer(big)
    assert not sub.offer(big)
    assert sub.close_reason is disconnect.SLOW_CONSUMER


async def test_close_wakes_the_pump_and_first_reason_wins() -> None:
    sub = Subscriber("u", max_events=10, max_bytes=10_000)
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close(disconnect.SHUTDOWN)
    sub.close(disconnect.TOKEN_EXPIRED)
    assert await asyncio.wait_for(waiter, 1) == []
    assert sub.close_reason is disconnect.SHUTDOWN
    assert not sub.offer(frame())


async def test_wait_active() -> None:
    sub = Subscriber("u", max_events=10, max_bytes=10_000)
    waiter = asyncio.create_task(sub.wait_active())
    await asyncio.sleep(0)
    assert not waiter.done()
    sub.activate()
    assert await asyncio.wait_for(waiter, 1) is True
    other = Subscriber("u", max_events=10, max_bytes=10_000)
    waiter = asyncio.create_task(other.wait_active())
    await asyncio.sleep(0)
    other.close(disconnect.SHUTDOWN)
    assert await asyncio.wait_for(waiter, 1) is False


def test_catalogue_codes_are_unique_per_reason() -> None:
    reasons = [d.reason for d in disconnect.CATALOGUE]
    assert len(reasons) == len(set(reasons))
    for d in disconnect.CATALOGUE:
        assert len(d.reason.encode()) <= 123
        assert d.code in (1008, 1011, 1012, 1013) or 4000 <= d.code <= 4999  # RFC 6455 or private


async def test_a_single_large_frame_passes_an_empty_queue() -> None:
    big = frame(pad=5000)
    sub = Subscriber("u", max_events=100, max_bytes=1000)
    assert sub.offer(big)
    assert not sub.offer(frame())  # but nothing may queue behind it
    assert sub.close_reason is disconnect.SLOW_CONSUMER
