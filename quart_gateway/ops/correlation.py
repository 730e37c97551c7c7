"""X-Correlation-ID: taken from the request when it is safe to echo, else generated.

`install()` applies it to every Quart request: the id is bound to the request's log lines and
echoed on the response. The stream handlers call `correlation_id()` themselves.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from quart import g, request

from quart_gateway.ops import logs

if TYPE_CHECKING:
    from quart import Quart, Response

CORRELATION_HEADER = "X-Correlation-ID"
_SAFE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def correlation_id(supplied: str | None) -> str:
    if supplied and _SAFE.fullmatch(supplied):
        return supplied
    return uuid.uuid4().hex


def install(app: Quart) -> None:
    @app.before_request
    async def _bind_request() -> None:
        g.correlation_id = correlation_id(request.headers.get(CORRELATION_HEADER))
        logs.bind(correlation_id=g.correlation_id)

    @app.after_request
    async def _echo(response: Response) -> Response:
        supplied = getattr(g, "correlation_id", None)
        if supplied:
            response.headers[CORRELATION_HEADER] = supplied
        return response
