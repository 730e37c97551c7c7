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
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")

# `token=...`, `ticket=...` in query strings, and bearer tokens anywhere in a message.
_SECRET_QUERY = re.compile(r"((?:^|[?&\s])(?:token|ticket|access_token)=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


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


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    token = _CONTEXT.set(dict(_CONTEXT.get({})))
    try:
        bind(**fields)
        yield
    finally:
        _CONTEXT.reset(token)


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
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {
            k: v
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        }
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return redact(base)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Install one stderr handler on the root logger (hypercorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("hypercorn.access", "hypercorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
