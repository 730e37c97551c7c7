from __future__ import annotations

import pytest
from pydantic import ValidationError

import events


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
