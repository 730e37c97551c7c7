"""The only place Redis key and channel names are built, so publishers and gateway can't drift."""

from __future__ import annotations

CHANNEL_PREFIX = "ws:"
HISTORY_PREFIX = "ws-history:"


def user_channel(user_id: str) -> str:
    """Pub/sub channel carrying one user's live events (fixed by the origin contract)."""
    return f"{CHANNEL_PREFIX}{user_id}"


def history_key(user_id: str) -> str:
    """Redis Stream holding one user's recent events for resume."""
    return f"{HISTORY_PREFIX}{user_id}"


def user_of_channel(channel: str) -> str | None:
    """Inverse of `user_channel`; None for a channel that is not a user channel."""
    if channel.startswith(CHANNEL_PREFIX):
        return channel[len(CHANNEL_PREFIX) :]
    return None


# Field of each history stream entry that holds the event's JSON text (without its "id").
HISTORY_FIELD = "e"


def parse_stream_id(text: str) -> tuple[int, int] | None:
    """`"<ms>-<seq>"` as a comparable tuple; None for anything that is not a stream id."""
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit() or len(ms) > 20 or len(seq) > 20:
        return None
    return int(ms), int(seq)


def splice_id(event_json: str, event_id: str) -> str:
    """Insert `"id": event_id` as the first member of a JSON object's text.

    History stores each event without its id (Redis assigns it on XADD); live messages and
    replays carry it. Splicing avoids decoding and re-encoding the payload.
    """
    assert event_json.startswith("{"), "history entries are JSON objects"
    rest = event_json[1:].lstrip()
    sep = "" if rest.startswith("}") else ","
    return '{"id":"' + event_id + '"' + sep + rest
