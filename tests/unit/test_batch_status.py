from __future__ import annotations

import json

import pytest

from quart_gateway.errors import ForbiddenError, OwnershipUnknownError, UpstreamUnavailableError
from quart_gateway.hydrate.batch_status import from_aggregator, from_bos, strip_user_ids


def test_strip_user_ids_at_any_depth() -> None:
    value = {
        "user_id": "u",
        "a": {"user_id": "u", "b": [{"user_id": "u", "c": 1}, 2]},
        "d": [[{"user_id": "x"}]],
    }
    assert strip_user_ids(value) == {"a": {"b": [{"c": 1}, 2]}, "d": [[{}]]}


def test_aggregator_owned_batch() -> None:
    result = from_aggregator(
        {
            "batch_id": "b1",
            "user_id": "u1",
            "pipeline_state": {"spellcheck": "done", "user_id": "u1"},
            "last_updated": "t",
        },
        "u1",
        "b1",
    )
    assert result.status == "available"
    assert result.pipeline_state == {"spellcheck": "done"}
    assert result.last_updated == "t"


def test_aggregator_other_owner_is_forbidden_without_naming_them() -> None:
    with pytest.raises(ForbiddenError) as info:
        from_aggregator({"batch_id": "b", "user_id": "owner-9", "pipeline_state": {}}, "u1", "b")
    assert "owner-9" not in info.value.message


@pytest.mark.parametrize("owner", [None, "", "  "])
def test_missing_owner_fails_closed(owner: str | None) -> None:
    body = {"batch_id": "b", "pipeline_state": {}}
    if owner is not None:
        body["user_id"] = owner
    with pytest.raises(OwnershipUnknownError):
        from_aggregator(body, "u1", "b")
    with pytest.raises(OwnershipUnknownError):
        from_bos(body, "u1", "b")


@pytest.mark.parametrize("body", [[], "text", None, {"user_id": "u1"}])
def test_malformed_aggregator_bodies_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamUnavailableError):
        from_aggregator(body, "u1", "b")


def test_bos_nested_shape_takes_last_updated_from_pipeline_state() -> None:
    body = {
        "batch_id": "b1",
        "user_id": "u1",
        "pipeline_state": {
            "user_id": "u1",
            "last_updated": "2026-01-01T00:00:00Z",
            "spellcheck": {"status": "pending", "user_id": "u1"},
        },
    }
    result = from_bos(body, "u1", "b1")
    assert result.status == "pending_aggregation"
    assert result.last_updated == "2026-01-01T00:00:00Z"
    assert "user_id" not in json.dumps(result.pipeline_state)
    assert result.pipeline_state["spellcheck"] == {"status": "pending"}


def test_bos_flat_shape_and_updated_at() -> None:
    body = {"batch_id": "b1", "user_id": "u1", "spellcheck": "pending", "updated_at": "t0"}
    result = from_bos(body, "u1", "b1")
    assert result.pipeline_state == {"spellcheck": "pending", "updated_at": "t0"}
    assert result.last_updated == "t0"


def test_bos_without_any_timestamp() -> None:
    assert from_bos({"user_id": "u1", "pipeline_state": {}}, "u1", "b1").last_updated is None


def test_bos_other_owner_is_forbidden() -> None:
    with pytest.raises(ForbiddenError):
        from_bos({"batch_id": "b", "user_id": "u2", "pipeline_state": {}}, "u1", "b")
