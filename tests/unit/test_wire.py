from __future__ import annotations

import json

import pytest

from events import DOMAIN_EVENT_TYPES
from quart_gateway.live import wire


@pytest.mark.parametrize("event", sorted(DOMAIN_EVENT_TYPES))
def test_every_origin_type_passes_as_published(event: str) -> None:
    text = json.dumps({"event": event, "batch_id": "b", "timestamp": "t"})
    frame = wire.decode_message(text.encode())
    assert isinstance(frame, wire.Frame)
    assert frame.text == text
    assert frame.sse == f"data: {text}\n\n".encode()
    assert frame.event_id is None


def test_origin_has_eleven_types() -> None:
    assert len(DOMAIN_EVENT_TYPES) == 11


def test_legacy_data_envelope_passes() -> None:
    text = '{"event": "batch_phase_concluded", "data": {"batch_id": "b", "phase": "x"}}'
    frame = wire.decode_message(text)
    assert isinstance(frame, wire.Frame)
    assert json.loads(frame.text) == json.loads(text)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", wire.NOT_JSON),
        (b"\xff\xfe", wire.NOT_UTF8),
        (b"[1, 2]", wire.NOT_OBJECT),
        (b'"text"', wire.NOT_OBJECT),
        (b"42", wire.NOT_OBJECT),
        (b"{}", wire.UNKNOWN_EVENT),
        (b'{"event": "nope"}', wire.UNKNOWN_EVENT),
        (b'{"event": ["class_created"]}', wire.UNKNOWN_EVENT),
        (b'{"event": "ping"}', wire.UNKNOWN_EVENT),  # system types come from the gateway only
        (b'{"event": "connected"}', wire.UNKNOWN_EVENT),
    ],
)
def test_invalid_messages_are_dropped(payload: bytes, reason: wire.DropReason) -> None:
    assert wire.decode_message(payload) == reason


def test_pretty_printed_json_is_compacted_for_sse() -> None:
    text = json.dumps({"event": "class_created", "class_id": "c\nx"}, indent=2)
    frame = wire.decode_message(text)
    assert isinstance(frame, wire.Frame)
    assert frame.sse.count(b"\n") == 2  # one data line, one blank line
    assert json.loads(frame.text) == json.loads(text)


def test_stream_id_becomes_the_sse_id() -> None:
    frame = wire.decode_message('{"id":"1700000000000-3","event":"class_created"}')
    assert isinstance(frame, wire.Frame)
    assert frame.sse.startswith(b"id: 1700000000000-3\ndata: ")
    assert frame.event_id == (1700000000000, 3)


@pytest.mark.parametrize("bad_id", ["x\ndata: injected", "1-2\r", 5, "abc", "1-"])
def test_other_ids_never_reach_the_sse_id_line(bad_id: object) -> None:
    frame = wire.decode_message(json.dumps({"id": bad_id, "event": "class_created"}))
    assert isinstance(frame, wire.Frame)
    assert not frame.sse.startswith(b"id:")
    assert frame.sse.count(b"\n") == 2
    assert frame.event_id is None


def test_sse_comment_strips_newlines() -> None:
    assert wire.sse_comment("a\nb\rc") == b": a b c\n\n"


def test_frame_size_counts_sse_bytes() -> None:
    frame = wire.make_frame('{"event":"class_created","timestamp":"t"}', "1-0")
    assert frame.size == len(frame.sse)
