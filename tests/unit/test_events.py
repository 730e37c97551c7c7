from __future__ import annotations

import pytest
from pydantic import ValidationError

import events
from events.channels import parse_stream_id, splice_id, user_channel, user_of_channel


def test_channel_names() -> None:
    assert user_channel("u-1") == "ws:u-1"
    assert user_of_channel("ws:u-1") == "u-1"
    assert user_of_channel("other") is None


def test_parse_event_by_discriminator() -> None:
    event = events.parse_event(
        {"event": "batch_file_added", "batch_id": "b", "essay_id": "e", "filename": "f.docx"}
    )
    assert isinstance(event, events.BatchFileAdded)
    assert event.timestamp  # defaulted


def test_unknown_fields_are_kept() -> None:
    event = events.parse_event(
        {"event": "class_created", "class_id": "c", "class_designation": "9A", "extra": 1}
    )
    assert event.model_dump()["extra"] == 1


@pytest.mark.parametrize(
    "data",
    [
        {"event": "nope"},
        {"event": "class_created"},  # missing fields
        {
            "event": "student_parsing_completed",
            "batch_id": "b",
            "parsed_count": -1,
            "total_count": 1,
        },
    ],
)
def test_invalid_events(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        events.parse_event(data)


def test_json_schema_covers_every_type() -> None:
    schema = events.json_schemas()
    names = {
        d["properties"]["event"]["const"]
        for d in schema["$defs"].values()
        if "event" in d.get("properties", {})
    }
    assert names == set(events.EVENT_MODELS)
    assert schema["discriminator"]["propertyName"] == "event"


def test_stream_ids() -> None:
    assert parse_stream_id("1-2") == (1, 2)
    assert parse_stream_id("10-0") > parse_stream_id("9-99")  # type: ignore[operator]
    for bad in ("", "1", "a-b", "1-2-3", "-1-2", "1- 2"):
        assert parse_stream_id(bad) is None


def test_splice_id() -> None:
    assert splice_id('{"event":"x"}', "1-0") == '{"id":"1-0","event":"x"}'
    assert splice_id("{}", "1-0") == '{"id":"1-0"}'
