"""The gateway's exception tree and the stable error codes clients see.

    GatewayError                 any error answered to a client with a JSON body
    ├── AuthError                401 unauthorized: missing, malformed, expired or forged token
    ├── ForbiddenError           403 forbidden: the batch belongs to someone else
    ├── NotFoundError            404 not_found: neither source knows the batch
    ├── RateLimitedError         429 rate_limited: too many requests (carries retry_after)
    ├── TooManyConnectionsError  429 too_many_connections: MAX_CONNECTIONS_PER_USER reached
    └── UpstreamError            5xx: an internal service failed us
        ├── UpstreamUnavailableError  503 upstream_unavailable: refused, reset, 5xx, bad body
        ├── UpstreamTimeoutError      504 upstream_timeout: no answer within the bound
        └── OwnershipUnknownError     502 ownership_unknown: upstream did not name the owner

    ConfigError                  start-up only: names the offending environment variable

REST bodies are `{"error": {"code": ..., "message": ...}}`. Messages are safe to show to a user;
details (owner ids, upstream bodies) go to the logs only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from quart import Quart
    from quart.typing import ResponseReturnValue

logger = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of every error answer, REST and `/events` alike."""
    return {"error": {"code": code, "message": message}}


class ConfigError(Exception):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class GatewayError(Exception):
    status_code = 500
    code = "internal_error"
    message = "Internal server error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


class AuthError(GatewayError):
    status_code = 401
    code = "unauthorized"
    message = "Missing or invalid token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class ForbiddenError(GatewayError):
    status_code = 403
    code = "forbidden"
    message = "You do not have access to this batch"


class NotFoundError(GatewayError):
    status_code = 404
    code = "not_found"
    message = "Batch not found"


class RateLimitedError(GatewayError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyConnectionsError(RateLimitedError):
    code = "too_many_connections"
    message = "Too many open streams for this user"


class UpstreamError(GatewayError):
    status_code = 503
    code = "upstream_unavailable"
    message = "Backend services are temporarily unavailable"


class UpstreamUnavailableError(UpstreamError):
    pass


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    code = "upstream_timeout"
    message = "Backend services did not answer in time"


class OwnershipUnknownError(UpstreamError):
    status_code = 502
    code = "ownership_unknown"
    message = "Batch ownership information unavailable"


def install_error_handlers(app: Quart) -> None:
    """Answer every error of a Quart route with `error_body()`: a GatewayError with its own
    code, an HTTP error (404, 405...) with its name, anything else with a logged 500."""

    @app.errorhandler(GatewayError)
    async def _gateway_error(error: GatewayError) -> ResponseReturnValue:
        level = logging.WARNING if error.status_code >= 500 else logging.INFO
        logger.log(level, "request failed: %s", error.code, extra={"status": error.status_code})
        return error_body(error.code, error.message), error.status_code, error.headers()

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> ResponseReturnValue:
        code = (error.name or "error").lower().replace(" ", "_")
        status = error.code or 500
        headers = dict(error.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return error_body(code, error.description or error.name or "Error"), status, headers

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> ResponseReturnValue:
        logger.exception("unhandled error")
        return error_body("internal_error", "Internal server error"), 500
