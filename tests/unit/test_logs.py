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


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "test", "levelname": "INFO", "levelno": 20, "msg": message, "args": args}
    )
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_line_break_in_a_value_cannot_forge_a_text_log_line() -> None:
    line = logs.TextFormatter().format(
        record("served %s", "b1\n2026 INFO forged: admin", batch_id="b\r\nINFO x", sub="\u2028")
    )
    assert not set(line) & {"\n", "\r", "\u2028"}
    assert "b1\\n2026 INFO forged" in line


def test_every_json_field_is_redacted_and_one_line() -> None:
    entry = json.loads(
        logs.JsonFormatter().format(record("m", batch_id=JWT, path=f"/x?token={JWT}"))
    )
    assert JWT not in json.dumps(entry)
    assert entry["batch_id"] == "[redacted-jwt]"


def test_a_lone_surrogate_does_not_break_either_format() -> None:
    bad = record("user %s", "x\ud800", user_id="x\ud800")
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        formatter.format(bad).encode()  # encodable: the handler writes UTF-8


def test_bound_fields_are_restored_and_a_bound_is_entered_once() -> None:
    scope = logs.bound(user_id="u-1")
    with scope:
        assert logs.context()["user_id"] == "u-1"
        with pytest.raises(RuntimeError):
            scope.__enter__()  # nested: would lose the outer restore
    assert "user_id" not in logs.context()
    with pytest.raises(RuntimeError), scope:
        pass  # again: would bind nothing
