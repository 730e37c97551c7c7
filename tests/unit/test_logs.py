from __future__ import annotations

import json
import logging

import pytest

from quart_gateway.ops import logs


@pytest.mark.parametrize(
    "text",
    [
        "GET /ws?token=eyJhbGciOi.eyJzdWIi.sig HTTP/1.1",
        "/events?last_event_id=1-0&token=abc.def.ghi",
        "/events?ticket=T-123",
        "Authorization: Bearer abc.def.ghi",
        "oops eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl in a message",
    ],
)
def test_redact_removes_tokens(text: str) -> None:
    redacted = logs.redact(text)
    for secret in ("eyJhbGciOi", "abc.def.ghi", "T-123", "c2lnbmF0dXJl"):
        assert secret not in redacted


def test_redact_keeps_other_query_values() -> None:
    assert (
        logs.redact("/events?last_event_id=1-0&token=x")
        == "/events?last_event_id=1-0&token=[redacted]"
    )


def test_json_lines_carry_the_bound_context(caplog: pytest.LogCaptureFixture) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(logs.ContextFilter())
    formatter = logs.JsonFormatter()
    records: list[str] = []
    handler.emit = lambda record: records.append(formatter.format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logs.bound(correlation_id="c-1", user_id="u-1", batch_id="b-1"):
            logger.info("hello %s", "/ws?token=secret.token.value")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(r) for r in records)
    assert first["correlation_id"] == "c-1"
    assert first["user_id"] == "u-1"
    assert first["batch_id"] == "b-1"
    assert "secret.token.value" not in first["message"]
    assert "correlation_id" not in second
