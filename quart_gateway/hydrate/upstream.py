"""The shared httpx client for internal services, and the mapping of its errors.

One `httpx.AsyncClient` per worker, created in the lifespan, with explicit timeouts and pool
limits. Every call is additionally bounded by `asyncio.timeout()`, because httpx's timeouts
apply per operation (connect, each read) and a slowly dripping body could outlast them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from quart_gateway.errors import UpstreamTimeoutError, UpstreamUnavailableError
from quart_gateway.settings import Settings

logger = logging.getLogger(__name__)


def create_client(settings: Settings) -> httpx.AsyncClient:
    timeout = settings.upstream_timeout_seconds
    headers = {"User-Agent": f"{settings.service_id}/quart-gateway"}
    if settings.internal_api_key:
        headers["X-Internal-API-Key"] = str(settings.internal_api_key)
        headers["X-Service-ID"] = settings.service_id
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
        headers=headers,
        follow_redirects=False,
        trust_env=False,
    )


# Deeper upstream JSON is refused: the answer is copied recursively (strip_user_ids) and
# serialised again, and real status bodies are a few levels deep.
MAX_DEPTH = 32


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    correlation_id: str,
    service: str,
) -> tuple[int, Any]:
    """GET `url`; return (status, decoded JSON or None). Raises the gateway's upstream errors.

    Only 200 bodies are read and decoded. A 200 whose body is larger than `max_bytes`, is not
    strict JSON (NaN and Infinity are not JSON) or is nested deeper than MAX_DEPTH is an
    upstream failure: the client gets a 503, never a 500 or a body it cannot parse.
    """
    extra = {"upstream": service}
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "GET", url, headers={"X-Correlation-ID": correlation_id}
            ) as response:
                if response.status_code != 200:
                    return response.status_code, None
                body = await _read_capped(response, max_bytes)
    except (TimeoutError, httpx.TimeoutException) as exc:
        logger.warning("%s timed out after %.2fs", service, timeout, extra=extra)
        raise UpstreamTimeoutError() from exc
    except httpx.HTTPError as exc:
        logger.warning("%s unreachable: %s", service, type(exc).__name__, extra=extra)
        raise UpstreamUnavailableError() from exc
    if body is None:
        logger.warning("%s answered more than %d bytes", service, max_bytes, extra=extra)
        raise UpstreamUnavailableError()
    try:
        value = parse_json(body)
    except ValueError as exc:
        logger.warning(
            "%s answered 200 with a body that is not JSON: %s", service, exc, extra=extra
        )
        raise UpstreamUnavailableError() from exc
    return 200, value


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `max_bytes`."""
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON of at most MAX_DEPTH levels; ValueError for anything else."""
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    if not within_depth(value, MAX_DEPTH):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def within_depth(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest at most `limit` levels (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True
