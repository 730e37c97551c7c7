"""System frames: built from their `events` models, on the wire exactly as clients know them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

import pytest

import events
from quart_gateway.live import disconnect, messages
from quart_gateway.live.wire import Frame


def decoded(frame: Frame) -> dict[str, Any]:
    obj = json.loads(frame.text)
    assert isinstance(obj, dict)
    return obj


def wire_shape(frame: Frame) -> None:
    """Compact JSON on one line, no history id, and the same object on both transports."""
    assert frame.text == json.dumps(decoded(frame), separators=(",", ":"), ensure_ascii=False)
    assert frame.sse == f"data: {frame.text}\n\n".encode()
    assert frame.event_id is None
    assert "id" not in decoded(frame)


def test_connected() -> None:
    frame = messages.connected_frame("1f", "sse", 15.0)
    wire_shape(frame)
    obj = decoded(frame)
    assert list(obj) == ["event", "connection_id", "transport", "heartbeat_interval", "timestamp"]
    assert obj == {**obj, "event": "connected", "connection_id": "1f", "transport": "sse"}
    assert obj["heartbeat_interval"] == 15.0
    assert isinstance(events.parse_event(obj), events.Connected)


def test_ping() -> None:
    frame = messages.ping_frame()
    wire_shape(frame)
    assert list(decoded(frame)) == ["event", "timestamp"]
    assert isinstance(events.parse_event(decoded(frame)), events.Ping)


@pytest.mark.parametrize("reason", ["redis_reconnected", "history_unavailable"])
def test_resync(reason: Literal["redis_reconnected", "history_unavailable"]) -> None:
    frame = messages.resync_frame(reason)
    wire_shape(frame)
    obj = decoded(frame)
    assert list(obj) == ["event", "reason", "timestamp"]
    parsed = events.parse_event(obj)
    assert isinstance(parsed, events.Resync)
    assert parsed.reason == reason


@pytest.mark.parametrize("ending", disconnect.CATALOGUE, ids=lambda e: e.reason)
def test_disconnect(ending: disconnect.Ending) -> None:
    frame = messages.disconnect_frame(ending)
    wire_shape(frame)
    obj = decoded(frame)
    assert list(obj) == ["event", "code", "reason", "reconnect", "timestamp"]
    parsed = events.parse_event(obj)
    assert isinstance(parsed, events.Disconnect)
    assert (parsed.code, parsed.reason, parsed.reconnect) == (
        ending.code,
        ending.reason,
        ending.reconnect,
    )


def test_timestamps_are_utc_iso() -> None:
    stamp = decoded(messages.ping_frame())["timestamp"]
    assert datetime.fromisoformat(stamp).tzinfo == UTC
