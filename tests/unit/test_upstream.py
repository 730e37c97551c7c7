"""Strict, bounded JSON from internal services (`hydrate.upstream.parse_json`)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quart_gateway.hydrate.upstream import MAX_DEPTH, parse_json, within_depth


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "body",
    [b'{"x": NaN}', b"[Infinity]", b"-Infinity", nested(MAX_DEPTH + 1), nested(100_000), b"\xff"],
)
def test_what_a_client_could_not_parse_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"JSON|nested|UTF-8"):
        parse_json(body)


def test_status_bodies_pass() -> None:
    body = {"batch_id": "b", "pipeline_state": {"a": [{"b": 1}]}, "last_updated": None}
    assert parse_json(json.dumps(body).encode()) == body
    assert parse_json(nested(MAX_DEPTH)) is not None


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=80), st.sampled_from("[{"))
def test_depth_is_measured_exactly(depth: int, opener: str) -> None:
    value: object = 1
    for _ in range(depth):
        value = [value] if opener == "[" else {"k": value}
    assert within_depth(value, MAX_DEPTH) == (depth <= MAX_DEPTH)
