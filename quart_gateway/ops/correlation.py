"""X-Correlation-ID: taken from the request when it is safe to echo, else generated."""

from __future__ import annotations

import re
import uuid

CORRELATION_HEADER = "X-Correlation-ID"
_SAFE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def correlation_id(supplied: str | None) -> str:
    if supplied and _SAFE.fullmatch(supplied):
        return supplied
    return uuid.uuid4().hex
