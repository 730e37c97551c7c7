"""The only place Redis key and channel names are built, so publishers and gateway can't drift.

Also the one definition of what a user id and a stream id are, checked the same way by the
gateway (a token's `sub`, a client's `Last-Event-ID`) and by the publishers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHANNEL_PREFIX = "ws:"
HISTORY_PREFIX = "ws-history:"

USER_ID_MAX_LENGTH = 255
USER_ID_RULE = (
    f"a user id is a string of 1 to {USER_ID_MAX_LENGTH} characters, without control "
    "characters (C0, DEL, C1), line or paragraph separators, or lone surrogates, and "
    "without leading or trailing whitespace"
)
# Cc (U+0000-U+001F, U+007F-U+009F), Zl, Zp, and surrogates (which UTF-8 cannot encode).
_USER_ID_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def valid_user_id(user_id: object) -> bool:
    """Whether `user_id` may name a user's channel and history (the gateway's `sub` rule).

    A user id is a `str` of 1 to 255 characters (the OpenID Connect limit for `sub`) that
    contains no control character (C0, DEL or C1: so no CR, LF or NUL), no line or paragraph
    separator (U+2028, U+2029) and no lone surrogate (so it is always encodable as UTF-8),
    and neither starts nor ends with whitespace (so it is not blank). Anything else is
    allowed: UUIDs, e-mail addresses, numeric ids, letters of any script, inner spaces.
    Never raises.
    """
    return (
        isinstance(user_id, str)
        and 0 < len(user_id) <= USER_ID_MAX_LENGTH
        and not user_id[0].isspace()
        and not user_id[-1].isspace()
        and _USER_ID_FORBIDDEN.search(user_id) is None
    )


def cluster_tag(user_id: str) -> str:
    """`{<user_id>}`: the Redis Cluster hash tag that puts every name of one user in one slot.

    The slot of a name with a tag is the slot of the text between its first `{` and the first
    `}` after it, so a `}` in the user id would cut the tag short (or, as its first character,
    void it). The tag therefore writes `%` as `%25` and `}` as `%7D`; every other user id,
    UUIDs, e-mail addresses and numbers among them, appears as it is.
    """
    return "{" + user_id.replace("%", "%25").replace("}", "%7D") + "}"


def user_channel(user_id: str, *, cluster: bool = False) -> str:
    """Pub/sub channel carrying one user's live events: `ws:<user_id>` (fixed by the origin
    contract); with `cluster`, the shard channel `ws:{<user_id>}`, in the slot of the history."""
    return CHANNEL_PREFIX + (cluster_tag(user_id) if cluster else user_id)


def history_key(user_id: str, *, cluster: bool = False) -> str:
    """Redis Stream holding one user's recent events for resume: `ws-history:<user_id>`, or
    `ws-history:{<user_id>}` with `cluster`."""
    return HISTORY_PREFIX + (cluster_tag(user_id) if cluster else user_id)


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Every per-user Redis name of one deployment: standalone and Sentinel use the names of
    the origin contract (`ws:<user_id>`); a Redis Cluster puts all of a user's names in one
    slot with a hash tag (`ws:{<user_id>}`), so one script may touch them together."""

    cluster: bool = False

    def channel(self, user_id: str) -> str:
        return user_channel(user_id, cluster=self.cluster)

    def history(self, user_id: str) -> str:
        return history_key(user_id, cluster=self.cluster)

    def user_key(self, prefix: str, user_id: str) -> str:
        """A gateway key of one user (rate limits, leases): `<prefix><user_id>`, tagged in a
        cluster."""
        return prefix + (cluster_tag(user_id) if self.cluster else user_id)


# Field of each history stream entry that holds the event's JSON text (without its "id").
HISTORY_FIELD = "e"
# Field of a marker entry: written by the gateway into an empty history so that a cursor
# always names an existing entry. Not an event; replay skips it.
MARKER_FIELD = "m"

# Each part of a stream id is an unsigned 64-bit integer: 20 decimal digits at most.
STREAM_ID_PART_MAX = 2**64 - 1
_STREAM_ID_PART_DIGITS = 20


def parse_stream_id(text: object) -> tuple[int, int] | None:
    """`"<ms>-<seq>"` as a comparable tuple; None for anything that is not a stream id.

    Each part is 1 to 20 ASCII digits with a value of at most 2**64 - 1, as Redis requires,
    so every id accepted here is one Redis accepts. Never raises, whatever `text` is.
    """
    if not isinstance(text, str) or not text.isascii():
        # str.isdigit() alone accepts any script's digits (Redis does not) and superscripts
        # (which int() refuses).
        return None
    ms, _, seq = text.partition("-")  # no "-": seq is "" and is refused
    for part in (ms, seq):
        if not 0 < len(part) <= _STREAM_ID_PART_DIGITS or not part.isdigit():
            return None
    parsed = int(ms), int(seq)
    if max(parsed) > STREAM_ID_PART_MAX:
        return None
    return parsed


def splice_id(event_json: str, event_id: str) -> str:
    """Insert `"id": event_id` as the first member of a JSON object's text.

    History stores each event without its id (Redis assigns it on XADD); live messages and
    replays carry it. Splicing avoids decoding and re-encoding the payload.
    """
    assert event_json.startswith("{"), "history entries are JSON objects"
    rest = event_json[1:].lstrip()
    sep = "" if rest.startswith("}") else ","
    return '{"id":"' + event_id + '"' + sep + rest
