"""`frames()`: connected, replay or resync, then live frames de-duplicated against the replay.

Driven through its `HistorySource` seam with a fake history and a real `Subscriber`, so the
resume watermark is tested without Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Literal

import pytest

import events
from quart_gateway.live import disconnect
from quart_gateway.live.history import HistoryUnavailableError, Replay
from quart_gateway.live.stream import frames
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import Frame, make_frame
from quart_gateway.ops.metrics import Metrics

HEARTBEAT = 15.0


CURSOR = "0-1"


class FakeHistory:
    """Answers every `since()` with one prepared replay and every `cursor()` with one id, or
    fails like an unreadable Redis."""

    def __init__(
        self,
        replay: Replay | None = None,
        *,
        fails: bool = False,
        cursor: str | None = CURSOR,
    ) -> None:
        self.replay = replay if replay is not None else Replay([])
        self.fails = fails
        self.next_cursor = cursor  # None: the cursor read fails
        self.calls: list[tuple[str, str]] = []
        self.cursors = 0

    async def since(self, user_id: str, last_id: str) -> Replay:
        self.calls.append((user_id, last_id))
        if self.fails:
            raise HistoryUnavailableError("ConnectionError")
        return self.replay

    async def cursor(self, user_id: str) -> str:
        self.cursors += 1
        if self.next_cursor is None:
            raise HistoryUnavailableError("ConnectionError")
        return self.next_cursor


def event(event_id: str | None, n: int = 0) -> Frame:
    obj = {"event": "class_created", "class_id": f"c{n}", "class_designation": "9A"}
    if event_id is not None:
        obj = {"id": event_id, **obj}
    return make_frame(json.dumps(obj, separators=(",", ":")), event_id)


def ids(batch: list[Frame]) -> list[str | None]:
    return [json.loads(f.text).get("id") for f in batch]


def message(frame: Frame) -> events.Event:
    return events.parse_event(json.loads(frame.text))


@pytest.fixture(name="sub")
def _sub() -> Subscriber:
    sub = Subscriber("user-1", max_events=100, max_bytes=1_000_000)
    sub.activate()
    return sub


@pytest.fixture(name="metrics")
def _metrics() -> Metrics:
    return Metrics()  # a registry of its own: one per test is fine


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def stream(
    sub: Subscriber, history: FakeHistory, metrics: Metrics, last_event_id: str | None = None
) -> AsyncIterator[list[Frame]]:
    return frames(
        sub,
        transport="ws",
        heartbeat_interval=HEARTBEAT,
        last_event_id=last_event_id,
        history=history,
        metrics=metrics,
    )


async def next_batch(it: AsyncIterator[list[Frame]]) -> list[Frame]:
    async with asyncio.timeout(1):
        return await anext(it)


async def no_batch_yet(it: AsyncIterator[list[Frame]]) -> asyncio.Task[list[Frame]]:
    """Start waiting for the next batch and check that none is ready."""
    task = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0.01)
    assert not task.done()
    return task


async def test_connected_comes_first(sub: Subscriber, metrics: Metrics) -> None:
    async with aclosing(stream(sub, FakeHistory(), metrics)) as it:
        (first,) = await next_batch(it)
    connected = message(first)
    assert isinstance(connected, events.Connected)
    assert (connected.connection_id, connected.transport, connected.heartbeat_interval) == (
        sub.conn_id,
        "ws",
        HEARTBEAT,
    )
    # The cursor: also the SSE id, so EventSource resumes from it with nothing received.
    assert connected.cursor == CURSOR
    assert first.event_id == (0, 1)
    assert first.sse.startswith(b"id: 0-1\n")


async def test_without_a_last_id_only_live_frames_follow(sub: Subscriber, metrics: Metrics) -> None:
    history = FakeHistory(Replay([event("1-0")]))
    async with aclosing(stream(sub, history, metrics)) as it:
        await next_batch(it)
        live = [event("1-0", 1), event(None, 2)]
        for f in live:
            sub.offer(f)
        assert await next_batch(it) == live  # all after the cursor: nothing dropped
    assert history.calls == []
    assert history.cursors == 1


async def test_complete_replay_then_live_without_duplicates(
    sub: Subscriber, metrics: Metrics
) -> None:
    history = FakeHistory(Replay([event("2-0"), event("3-0")]))
    # Published after the subscription and before the history read: in both.
    for event_id in ("2-0", "3-0", "4-0"):
        sub.offer(event(event_id))
    async with aclosing(stream(sub, history, metrics, "1-0")) as it:
        await next_batch(it)
        assert ids(await next_batch(it)) == ["2-0", "3-0"]
        assert ids(await next_batch(it)) == ["4-0"]
    assert history.calls == [("user-1", "1-0")]
    assert counter(metrics, "gateway_events_replayed_total") == 2
    assert counter(metrics, "gateway_resyncs_total", reason="history_unavailable") == 0


async def test_an_empty_replay_drops_live_frames_up_to_the_last_id(
    sub: Subscriber, metrics: Metrics
) -> None:
    sub.offer(event("5-0"))
    sub.offer(event("6-0"))
    async with aclosing(stream(sub, FakeHistory(), metrics, "5-0")) as it:
        await next_batch(it)
        assert ids(await next_batch(it)) == ["6-0"]


async def test_legacy_frames_without_ids_pass_the_watermark(
    sub: Subscriber, metrics: Metrics
) -> None:
    history = FakeHistory(Replay([event("2-0")]))
    sub.offer(event(None, 1))
    sub.offer(event("2-0"))
    async with aclosing(stream(sub, history, metrics, "1-0")) as it:
        await next_batch(it)
        assert ids(await next_batch(it)) == ["2-0"]
        assert ids(await next_batch(it)) == [None]  # the duplicate went, the legacy one stays
        # No id-carrying frame got through yet: the watermark still holds.
        sub.offer(event("1-5"))
        sub.offer(event(None, 2))
        assert ids(await next_batch(it)) == [None]


async def test_the_watermark_ends_with_the_first_new_id(sub: Subscriber, metrics: Metrics) -> None:
    history = FakeHistory(Replay([event("5-0")]))
    async with aclosing(stream(sub, history, metrics, "4-0")) as it:
        await next_batch(it)
        assert ids(await next_batch(it)) == ["5-0"]
        waiting = await no_batch_yet(it)
        sub.offer(event("5-0"))  # a duplicate alone: dropped, the stream keeps waiting
        await asyncio.sleep(0.01)
        assert not waiting.done()
        sub.offer(event("6-0"))
        assert ids(await asyncio.wait_for(waiting, 1)) == ["6-0"]
        # Ids only grow, so the check is off from here on: nothing is dropped any more.
        sub.offer(event("3-0"))
        assert ids(await next_batch(it)) == ["3-0"]


@pytest.mark.parametrize("gap", ["unknown_id", "trimmed"])
async def test_a_gap_is_a_resync_and_live_frames_are_not_filtered(
    sub: Subscriber, metrics: Metrics, gap: Literal["unknown_id", "trimmed"]
) -> None:
    history = FakeHistory(Replay([], gap))
    async with aclosing(stream(sub, history, metrics, "9-0")) as it:
        await next_batch(it)
        (resync,) = await next_batch(it)
        sub.offer(event("1-0"))
        assert ids(await next_batch(it)) == ["1-0"]
    parsed = message(resync)
    assert isinstance(parsed, events.Resync)
    assert parsed.reason == "history_unavailable"
    assert counter(metrics, "gateway_resyncs_total", reason="history_unavailable") == 1
    assert counter(metrics, "gateway_events_replayed_total") == 0


async def test_an_unreadable_history_is_a_resync_and_counted(
    sub: Subscriber, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    history = FakeHistory(fails=True, cursor=None)
    async with aclosing(stream(sub, history, metrics, "1-0")) as it:
        (connected,) = await next_batch(it)
        (resync,) = await next_batch(it)
        sub.offer(event("1-0"))
        assert ids(await next_batch(it)) == ["1-0"]  # no cursor: no watermark either
    assert isinstance(message(resync), events.Resync)
    assert message(connected).model_dump().get("cursor") is None
    assert counter(metrics, "gateway_redis_errors_total", operation="history") == 2
    assert counter(metrics, "gateway_resyncs_total", reason="history_unavailable") == 1
    assert "history unavailable for resume: ConnectionError" in caplog.text


async def test_a_subscriber_closed_before_it_is_active_gets_nothing(metrics: Metrics) -> None:
    sub = Subscriber("user-1", max_events=100, max_bytes=1_000_000)
    history = FakeHistory()
    async with aclosing(stream(sub, history, metrics, "1-0")) as it:
        waiting = await no_batch_yet(it)  # not active yet: not even `connected`
        sub.close(disconnect.SHUTDOWN)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 1)
    assert history.calls == []


async def test_the_stream_ends_when_the_subscriber_is_closed(
    sub: Subscriber, metrics: Metrics
) -> None:
    async with aclosing(stream(sub, FakeHistory(), metrics)) as it:
        await next_batch(it)
        waiting = await no_batch_yet(it)
        sub.close(disconnect.TOKEN_EXPIRED)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 1)


async def test_live_frames_up_to_the_cursor_are_covered_by_hydration(
    sub: Subscriber, metrics: Metrics
) -> None:
    # Published after the subscription and before the cursor was read: before `connected`,
    # so the hydration that follows it includes them.
    sub.offer(event("0-1"))
    sub.offer(event("0-2"))
    async with aclosing(stream(sub, FakeHistory(), metrics)) as it:
        await next_batch(it)
        assert ids(await next_batch(it)) == ["0-2"]


async def test_a_gap_is_backfilled_from_the_last_id_sent(sub: Subscriber, metrics: Metrics) -> None:
    history = FakeHistory(Replay([event("3-0"), event("4-0")]))
    async with aclosing(stream(sub, history, metrics)) as it:
        await next_batch(it)
        sub.offer(event("2-0"))
        assert ids(await next_batch(it)) == ["2-0"]
        sub.mark_gap()  # the pub/sub connection was lost and is back
        sub.offer(event("4-0"))  # after the resubscription: live, and in history too
        sub.offer(event("5-0"))
        assert ids(await next_batch(it)) == ["3-0", "4-0", "5-0"]
    assert history.calls == [("user-1", "2-0")]
    assert counter(metrics, "gateway_resyncs_total", reason="redis_reconnected") == 0
    assert counter(metrics, "gateway_events_replayed_total") == 2


async def test_a_gap_right_after_connected_is_backfilled_from_the_cursor(
    sub: Subscriber, metrics: Metrics
) -> None:
    history = FakeHistory(Replay([event("1-0")]))
    async with aclosing(stream(sub, history, metrics)) as it:
        await next_batch(it)
        sub.mark_gap()
        assert ids(await next_batch(it)) == ["1-0"]
    assert history.calls == [("user-1", CURSOR)]


@pytest.mark.parametrize("why", ["legacy_events", "history_trimmed", "no_cursor"])
async def test_a_gap_history_cannot_cover_is_a_resync_with_a_new_cursor(
    sub: Subscriber, metrics: Metrics, why: str
) -> None:
    history = FakeHistory(
        Replay([], "trimmed") if why == "history_trimmed" else Replay([event("7-0")]),
        cursor=None if why == "no_cursor" else CURSOR,
    )
    async with aclosing(stream(sub, history, metrics)) as it:
        await next_batch(it)
        history.next_cursor = "8-0" if why != "no_cursor" else None
        # A channel that carries bare PUBLISHes: history cannot say what else was missed.
        sub.mark_gap(legacy=why == "legacy_events")
        sub.offer(event("8-0"))  # before the new cursor: covered by the re-hydration
        sub.offer(event("9-0"))
        batch = await next_batch(it)
    resync = message(batch[0])
    assert isinstance(resync, events.Resync)
    assert resync.reason == "redis_reconnected"
    assert counter(metrics, "gateway_resyncs_total", reason="redis_reconnected") == 1
    if why == "no_cursor":
        assert resync.cursor is None
        assert ids(batch[1:]) == ["8-0", "9-0"]
    else:
        assert resync.cursor == "8-0"
        assert batch[0].sse.startswith(b"id: 8-0\n")
        assert ids(batch[1:]) == ["9-0"]
