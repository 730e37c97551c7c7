"""Properties of the pure decoders and encoders that hostile input reaches first.

Every published message, stored history entry, resume id and token claim set passes through
one of these functions before anything else looks at it. Whatever the input, they return a
value or a documented refusal: they never raise, and nothing they encode can add a line or a
field to an SSE stream. (The stream-id parser and the user-id rule have their own properties
in test_channels.py.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import DOMAIN_EVENT_TYPES
from events.channels import parse_stream_id
from quart_gateway.admission.auth import Principal, principal_of
from quart_gateway.errors import AuthError
from quart_gateway.live import wire
from quart_gateway.live.history import _replayed

bounded = settings(max_examples=300)

any_text = st.text(st.characters(exclude_categories=()))  # lone surrogates included
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
event_type = st.sampled_from(sorted(DOMAIN_EVENT_TYPES)) | any_text
stream_id_like = (
    st.builds(lambda a, b: f"{a}-{b}", st.integers(-5, 2**70), st.integers(-5, 2**70))
    | any_text
    | json_leaf
)


@st.composite
def published(draw: st.DrawFn) -> bytes:
    """What a publisher might send: events (some registered, with odd ids and fields) encoded
    compactly or pretty-printed, or arbitrary bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    obj: dict[str, Any] = draw(st.dictionaries(any_text, json_value, max_size=5))
    obj["event"] = draw(event_type)
    if draw(st.booleans()):
        obj["id"] = draw(stream_id_like)
    indent = draw(st.sampled_from([None, 0, 2]))
    ensure_ascii = draw(st.booleans())
    text = json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii)
    return text.encode("utf-8", "surrogatepass")


def assert_one_sse_frame(sse: bytes) -> None:
    """An optional `id:` line, one `data:` line and the blank line that ends the frame."""
    text = sse.decode()
    assert text.endswith("\n\n")
    lines = text[:-2].split("\n")
    assert "\r" not in text
    assert [line.split(":", 1)[0] for line in lines] in (["data"], ["id", "data"])


@bounded
@given(published())
def test_decoding_never_raises_and_never_adds_an_sse_line(data: bytes) -> None:
    frame = wire.decode_message(data)
    if isinstance(frame, wire.DropReason):
        return
    assert_one_sse_frame(frame.sse)
    obj = json.loads(frame.text, parse_constant=lambda name: pytest.fail(name))
    assert obj["event"] in DOMAIN_EVENT_TYPES
    frame.text.encode()  # always encodable: WebSocket text frames are UTF-8
    if frame.event_id is not None:
        assert frame.sse.startswith(f"id: {obj['id']}\n".encode())
        assert parse_stream_id(obj["id"]) == frame.event_id


def decoded_by_the_standard_parser(data: bytes | str) -> wire.Frame | wire.DropReason:
    """`decode_message` as it was with `json.loads` alone: the reference for the fast path."""
    if len(data) > wire.MAX_MESSAGE_BYTES:
        return wire.TOO_LARGE
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        return wire.NOT_UTF8

    def refuse(name: str) -> Any:
        raise ValueError(name)

    try:
        obj = json.loads(text, parse_constant=refuse)
    except RecursionError:
        return wire.TOO_DEEP
    except ValueError:
        return wire.NOT_JSON
    if not isinstance(obj, dict):
        return wire.NOT_OBJECT
    event = obj.get("event")
    if not isinstance(event, str) or event not in wire.REGISTERED_EVENT_TYPES:
        return wire.UNKNOWN_EVENT
    if text != text.strip() or "\n" in text or "\r" in text or not wire._encodable(text):
        text = json.dumps(obj, separators=(",", ":"))
    return wire.make_frame(text, obj.get("id"))


big_numbers = st.integers(min_value=2**63 - 2, max_value=2**80) | st.sampled_from(
    ["1e400", "-1e400", "1e-400", "123456789012345678901234567890.5"]
)


@st.composite
def published_with_odd_numbers(draw: st.DrawFn) -> bytes:
    """Published events carrying numbers a fast parser may read differently (past 64 bits,
    overflowing a double), spliced in as JSON text."""
    data = draw(published())
    number = str(draw(big_numbers))
    if data.startswith(b"{") and draw(st.booleans()):
        return b'{"big":' + number.encode() + b"," + data[1:]
    return data


@settings(max_examples=500)
@given(published_with_odd_numbers() | any_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_the_fast_parser_changes_no_outcome(data: bytes) -> None:
    assert wire.decode_message(data) == decoded_by_the_standard_parser(data)


@bounded
@given(any_text)
def test_decoding_text_never_raises(text: str) -> None:
    result = wire.decode_message(text)
    assert isinstance(result, wire.Frame | wire.DropReason)


@bounded
@given(any_text)
def test_an_sse_comment_is_one_line(text: str) -> None:
    comment = wire.sse_comment(text.encode("utf-8", "replace").decode())
    assert comment.startswith(b": ")
    assert comment.endswith(b"\n\n")
    assert b"\n" not in comment[:-2]
    assert b"\r" not in comment


@bounded
@given(any_text, st.none() | any_text)
def test_the_sse_encoder_refuses_what_would_add_a_line(data: str, event_id: str | None) -> None:
    try:
        sse = wire.sse_frame(data, event_id)
    except (ValueError, UnicodeEncodeError):
        return
    assert sse.count(b"\n") == (3 if event_id is not None else 2)
    assert b"\r" not in sse


claims_strategy = st.dictionaries(
    st.sampled_from(["sub", "exp", "aud", "iss", "extra"]),
    json_value | st.integers(min_value=-(10**400), max_value=10**400),
)


@bounded
@given(claims_strategy)
def test_claims_give_a_principal_or_an_auth_error(claims: dict[str, Any]) -> None:
    try:
        principal = principal_of(claims)
    except AuthError:
        return
    assert isinstance(principal, Principal)
    assert principal.user_id == claims["sub"]
    principal.user_id.encode()
    assert not set(principal.user_id) & {"\n", "\r"}
    assert 0 <= principal.expires_at < float("inf")


history_fields = st.lists(st.binary(max_size=8) | any_text, max_size=6)


@bounded
@given(
    st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    history_fields,
    published(),
)
def test_a_replayed_entry_passes_the_live_filter_or_is_dropped(
    entry_id: str, fields: list[Any], payload: bytes
) -> None:
    stored = [*fields, "e", payload.decode("utf-8", "replace")]
    frame = _replayed(entry_id.encode(), stored)
    if frame is None:
        return
    assert_one_sse_frame(frame.sse)
    assert json.loads(frame.text)["event"] in DOMAIN_EVENT_TYPES
    assert frame.event_id == parse_stream_id(entry_id)
