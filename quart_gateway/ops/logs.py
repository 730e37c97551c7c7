"""Structured logging: one JSON object per line, request context attached, secrets redacted.

Context (`correlation_id`, `user_id`, `batch_id`, `conn_id`) lives in contextvars set once per
request or connection, so every line logged while handling it carries them. Only the process
entry point calls `configure()`; the libraries (`events`, `publishers`) configure nothing.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")

# `token=...`, `ticket=...` in query strings, and bearer tokens anywhere in a message.
_SECRET_QUERY = re.compile(r"((?:^|[?&\s])(?:token|ticket|access_token)=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# Control characters (line breaks above all) in a value would let a client forge log lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_control(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def clean(value: object) -> str:
    """A value as one safe line: secrets redacted, control characters escaped, and text
    that cannot be encoded (lone surrogates) replaced."""
    text = redact(str(value))
    text = _CONTROL.sub(_escape_control, text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def redact(text: str) -> str:
    """Remove token/ticket query values and anything shaped like a JWT or bearer credential."""
    text = _SECRET_QUERY.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _JWT.sub("[redacted-jwt]", text)


def bind(**fields: str | None) -> None:
    """Attach fields to every later log line in this task (and tasks it starts)."""
    current = dict(_CONTEXT.get({}))
    current.update({k: v for k, v in fields.items() if v is not None})
    _CONTEXT.set(current)


def bound(**fields: str | None) -> Bound:
    """`with bound(**fields)`: `bind()` for the block, then the fields are as before."""
    return Bound(fields)


class Bound:
    """The context manager of `bound()`. A slotted class rather than a `@contextmanager`
    generator: a live stream's lasts as long as the connection."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: dict[str, str | None]) -> None:
        self._fields: dict[str, str | None] | None = fields
        self._token: contextvars.Token[dict[str, str]] | None = None

    def __enter__(self) -> None:
        fields, self._fields = self._fields, None
        if fields is None:
            raise RuntimeError("bound() is entered once")
        self._token = _CONTEXT.set(dict(_CONTEXT.get({})))
        bind(**fields)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _CONTEXT.reset(self._token)
            self._token = None


def context() -> dict[str, str]:
    return dict(_CONTEXT.get({}))


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record and redacts its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get({}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": clean(record.getMessage()),
        }
        for key, value in _extras(record):
            entry[key] = value if isinstance(value, int | float | bool) else clean(value)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def _extras(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            yield key, value


class TextFormatter(logging.Formatter):
    """One line per record (a traceback follows on lines of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name}: "
            f"{clean(record.getMessage())}"
        )
        extras = " ".join(f"{key}={clean(value)}" for key, value in _extras(record))
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Install one stderr handler on the root logger (hypercorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("hypercorn.access", "hypercorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
