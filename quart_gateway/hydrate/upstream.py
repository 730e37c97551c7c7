"""The shared httpx client for internal services, and the mapping of its errors.

One `httpx.AsyncClient` per worker, created in the lifespan, with explicit timeouts and pool
limits. Every call is additionally bounded by `asyncio.timeout()`, because httpx's timeouts
apply per operation (connect, each read) and a slowly dripping body could outlast them.
"""

from __future__ import annotations

import asyncio
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


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    correlation_id: str,
    service: str,
) -> tuple[int, Any]:
    """GET `url`; return (status, decoded JSON or None). Raises the gateway's upstream errors.

    Only 200 bodies are decoded; a 200 whose body is not JSON is an upstream failure.
    """
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(url, headers={"X-Correlation-ID": correlation_id})
    except (TimeoutError, httpx.TimeoutException) as exc:
        logger.warning("%s timed out after %.2fs", service, timeout, extra={"upstream": service})
        raise UpstreamTimeoutError() from exc
    except httpx.HTTPError as exc:
        logger.warning(
            "%s unreachable: %s", service, type(exc).__name__, extra={"upstream": service}
        )
        raise UpstreamUnavailableError() from exc
    if response.status_code != 200:
        return response.status_code, None
    try:
        return 200, response.json()
    except ValueError as exc:
        logger.warning("%s answered 200 with a non-JSON body", service, extra={"upstream": service})
        raise UpstreamUnavailableError() from exc
