"""Redis clients of one worker: a pooled command client and the pub/sub connection factory.

Both are built from the same URL (`redis://`, `rediss://`, `unix://`). `rediss://` skips
certificate verification unless REDIS_SSL_VERIFY is set: Heroku Redis uses self-signed
certificates.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from quart_gateway.live.multiplexer import ConnectionFactory

COMMAND_TIMEOUT_SECONDS = 2.0
COMMAND_CONNECTIONS = 1


def _transport_options(url: str, verify: bool) -> dict[str, Any]:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "unix":
        return {}
    options: dict[str, Any] = {"socket_keepalive": True}
    if scheme == "rediss" and not verify:
        options["ssl_cert_reqs"] = None
    return options


def command_client(url: str, *, verify_tls: bool = False) -> aioredis.Redis:
    """For rate limits, connection leases, history reads and readiness: bounded calls.

    One connection per worker (plus the pub/sub one), whatever the number of clients: every
    command is short, lease operations are batched, and callers queue for the connection
    (up to COMMAND_TIMEOUT_SECONDS) instead of opening more.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=COMMAND_CONNECTIONS,
        timeout=COMMAND_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        socket_connect_timeout=COMMAND_TIMEOUT_SECONDS,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
        client_name="gateway",
        **_transport_options(url, verify_tls),
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


def pubsub_connection_factory(url: str, *, verify_tls: bool = False) -> ConnectionFactory:
    """Connections for the multiplexer: RESP2, no read timeout (a watchdog pings instead)."""
    pool = aioredis.ConnectionPool.from_url(
        url,
        protocol=2,
        socket_timeout=None,
        socket_connect_timeout=5.0,
        client_name="gateway-pubsub",
        **_transport_options(url, verify_tls),
    )
    return pool.make_connection
