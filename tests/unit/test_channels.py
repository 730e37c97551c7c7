"""Redis names, the user-id rule and the stream-id parser (`events.channels`)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from events.channels import (
    STREAM_ID_PART_MAX,
    USER_ID_MAX_LENGTH,
    KeySpace,
    history_key,
    parse_stream_id,
    splice_id,
    user_channel,
    valid_user_id,
)

# Bounded (the profile in tests/conftest.py leaves no example database behind).
bounded = settings(max_examples=200)

# Every code point, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()))
uint64 = st.integers(min_value=0, max_value=STREAM_ID_PART_MAX)


def test_channel_names() -> None:
    assert user_channel("u-1") == "ws:u-1"
    assert history_key("u-1") == "ws-history:u-1"
    assert KeySpace().channel("u-1") == "ws:u-1"  # standalone and Sentinel: unchanged
    assert KeySpace().user_key("conn-leases:", "u-1") == "conn-leases:u-1"


def test_cluster_names_carry_the_user_id_as_a_hash_tag() -> None:
    keys = KeySpace(cluster=True)
    assert keys.channel("u-1") == user_channel("u-1", cluster=True) == "ws:{u-1}"
    assert keys.history("u-1") == history_key("u-1", cluster=True) == "ws-history:{u-1}"
    assert keys.user_key("conn-leases:", "u-1") == "conn-leases:{u-1}"
    # A `}` would end the tag early and `%` is the escape: both are written as %XX, so two
    # user ids never share a name.
    assert keys.channel("}a") == "ws:{%7Da}"
    assert keys.channel("a%7D") == "ws:{a%257D}"
    assert keys.channel("a}") != keys.channel("a%7D")


@bounded
@given(any_text)
@example("}")
@example("{}")
@example("a}b{c")
def test_cluster_names_of_one_user_share_a_slot(user_id: str) -> None:
    from redis.crc import key_slot

    if not valid_user_id(user_id):
        return
    keys = KeySpace(cluster=True)
    slot = key_slot(keys.channel(user_id).encode())
    assert key_slot(keys.history(user_id).encode()) == slot
    assert key_slot(keys.user_key("conn-leases:", user_id).encode()) == slot
    assert key_slot(keys.user_key("ratelimit:status:", user_id).encode()) == slot


def test_splice_id() -> None:
    assert splice_id('{"event":"x"}', "1-0") == '{"id":"1-0","event":"x"}'
    assert splice_id("{}", "1-0") == '{"id":"1-0"}'


# --- stream ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1-2", (1, 2)),
        ("0-0", (0, 0)),
        ("01-2", (1, 2)),  # Redis accepts leading zeros too
        (f"{2**64 - 1}-{2**64 - 1}", (2**64 - 1, 2**64 - 1)),
    ],
)
def test_stream_ids(text: str, expected: tuple[int, int]) -> None:
    assert parse_stream_id(text) == expected


def test_stream_ids_compare_numerically() -> None:
    assert parse_stream_id("10-0") > parse_stream_id("9-99")  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1-",
        "-1",
        "a-b",
        "1-2-3",
        "-1-2",
        "1- 2",
        " 1-2",
        "1-2\n",
        "+1-2",
        "1_0-2",
        "1.0-2",
        "*",
        "$",
        "\u00b2-1",  # superscript two: str.isdigit() is true, int() refuses it
        "1-\u0661",  # Arabic-Indic digit one: int() accepts it, Redis does not
        "\uff11-2",  # fullwidth digit one
        f"{2**64}-0",  # above uint64
        f"0-{2**64}",
        "0" * 21 + "-0",  # more than 20 digits
    ],
)
def test_not_stream_ids(text: str) -> None:
    assert parse_stream_id(text) is None


@pytest.mark.parametrize("value", [None, 12, b"1-2", ("1", "2"), 1.5])
def test_stream_id_of_a_non_string_is_none(value: object) -> None:
    assert parse_stream_id(value) is None


@bounded
@given(any_text)
@example("\u00b2-\u00b2")
@example("1\ud800-2")
def test_parse_stream_id_never_raises(text: str) -> None:
    parsed = parse_stream_id(text)
    if parsed is not None:
        # Whatever is accepted is plain ASCII and within the range Redis accepts.
        assert text.isascii()
        assert all(0 <= part <= STREAM_ID_PART_MAX for part in parsed)


@bounded
@given(uint64, uint64)
@example(STREAM_ID_PART_MAX, STREAM_ID_PART_MAX)
@example(0, 0)
def test_every_uint64_pair_round_trips(ms: int, seq: int) -> None:
    text = f"{ms}-{seq}"
    assert parse_stream_id(text) == (ms, seq)
    assert "-".join(map(str, (ms, seq))) == text


@bounded
@given(st.integers(min_value=STREAM_ID_PART_MAX + 1, max_value=10**20 - 1), uint64, st.booleans())
def test_parts_above_uint64_are_refused(big: int, other: int, big_first: bool) -> None:
    text = f"{big}-{other}" if big_first else f"{other}-{big}"
    assert parse_stream_id(text) is None


_NON_ASCII_DIGITS = st.characters(categories=["Nd", "No", "Nl"]).filter(lambda c: not c.isascii())


@bounded
@given(uint64, uint64, _NON_ASCII_DIGITS, st.data())
def test_non_ascii_digits_are_refused(ms: int, seq: int, digit: str, data: st.DataObject) -> None:
    text = f"{ms}-{seq}"
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    assert parse_stream_id(text[:at] + digit + text[at:]) is None


# --- user ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    [
        "u",
        "0",
        "42",
        "3f0c8c2e-8d7b-4b5e-9a57-1f0e0d6c9b11",
        "ada.lovelace@example.org",
        "auth0|5f7c8ec7c33c6c004bbafe82",
        "Ærøskøbing Ålund",
        "用户-七",
        "x" * USER_ID_MAX_LENGTH,
    ],
)
def test_valid_user_ids(user_id: str) -> None:
    assert valid_user_id(user_id)


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        " ",
        "   ",
        "\t",
        "\u3000",  # ideographic space: blank too
        " u",
        "u ",
        "u\n",
        "a\nb",
        "a\rb",
        "a\x00b",
        "a\x7fb",
        "a\x85b",  # C1 next line
        "a\u2028b",
        "a\u2029b",
        "a\ud800b",
        "\udfff",
        "x" * (USER_ID_MAX_LENGTH + 1),
    ],
)
def test_invalid_user_ids(user_id: str) -> None:
    assert not valid_user_id(user_id)


@pytest.mark.parametrize("value", [None, 1, b"u", ["u"], object()])
def test_a_non_string_is_not_a_user_id(value: object) -> None:
    assert not valid_user_id(value)


@bounded
@given(any_text)
@example("\ud800")
@example("a\r\nb")
def test_valid_user_ids_are_safe_names(user_id: str) -> None:
    if not valid_user_id(user_id):
        return
    user_id.encode("utf-8")  # no surrogates
    channel = user_channel(user_id).encode("utf-8")
    assert b"\r" not in channel
    assert b"\n" not in channel
    assert not any(unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} for c in user_id)
    assert user_id.strip() == user_id != ""
    history_key(user_id).encode("utf-8")


@bounded
@given(st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=64))
def test_printable_ids_are_valid(user_id: str) -> None:
    assert valid_user_id(user_id)
