"""Redis clients of one worker: a pooled command client and the pub/sub connection factory.

Both follow `REDIS_MODE`:
- `standalone`: built from `REDIS_URL` (`redis://`, `rediss://`, `unix://`). `rediss://` skips
  certificate verification unless REDIS_SSL_VERIFY is set: Heroku Redis uses self-signed
  certificates.
- `sentinel`: every new connection asks the sentinels (`REDIS_SENTINELS`) for the current
  primary of `REDIS_SENTINEL_SERVICE`. After a failover the broken connections fail, and the
  next ones go to the new primary: the multiplexer reconnects and resubscribes by itself, and
  the command connection on its next call. A demoted primary answers writes with READONLY,
  which redis-py turns into a reconnect. `REDIS_URL`, when set, gives the primary's password,
  database and TLS.
- `cluster`: `REDIS_URL` names any node of a Redis Cluster (its password and TLS apply to
  every node). Commands go through a `RedisCluster` client, which routes each key to its
  slot's node; pub/sub connections are made per node for `live.cluster.ClusterMultiplexer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

from quart_gateway.live.cluster import NodeConnector
from quart_gateway.live.multiplexer import ConnectionFactory
from quart_gateway.redis_kinds import RedisClient
from quart_gateway.settings import Settings

COMMAND_TIMEOUT_SECONDS = 2.0
COMMAND_CONNECTIONS = 1
# A cluster client never waits for a connection: past this many per node a call fails
# (MaxConnectionsError). Opened on demand; bursts of per-slot scripts use a few at once.
CLUSTER_CONNECTIONS_PER_NODE = 32
SENTINEL_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a worker's Redis is: a URL, or a sentinel-monitored service."""

    url: str | None
    verify_tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = "mymaster"
    sentinel_password: str | None = None
    cluster: bool = False

    @classmethod
    def of(cls, settings: Settings, url: str | None = None) -> RedisTarget:
        """The target `settings` name; `url` stands in for REDIS_URL (embedded mode)."""
        if url is None and settings.redis_url is not None:
            url = str(settings.redis_url)
        if settings.redis_mode == "sentinel":
            password = settings.redis_sentinel_password
            return cls(
                url,
                settings.redis_ssl_verify,
                settings.redis_sentinels,
                settings.redis_sentinel_service,
                str(password) if password else None,
            )
        return cls(url, settings.redis_ssl_verify, cluster=settings.redis_mode == "cluster")

    def seeds(self) -> list[tuple[str, int]]:
        """Cluster: the node REDIS_URL names, where the topology is first asked for."""
        assert self.url is not None
        parsed = parse_url(self.url)
        return [(str(parsed.get("host", "localhost")), int(parsed.get("port", 6379)))]


def _transport_options(url: str, verify: bool) -> dict[str, Any]:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "unix":
        return {}
    options: dict[str, Any] = {"socket_keepalive": True}
    if scheme == "rediss" and not verify:
        options["ssl_cert_reqs"] = None
    return options


def _primary_options(target: RedisTarget) -> dict[str, Any]:
    """What a sentinel-mode URL says about the primary: credentials, database, TLS."""
    if target.url is None:
        return {}
    parsed = parse_url(target.url)
    options: dict[str, Any] = {
        k: parsed[k] for k in ("username", "password", "db") if parsed.get(k)
    }
    if target.url.lower().startswith("rediss://"):
        options["ssl"] = True
        if not target.verify_tls:
            options["ssl_cert_reqs"] = None
    return options


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A sentinel-managed pool that makes callers wait for its few connections instead of
    failing (BlockingConnectionPool), like the standalone command pool."""


def open_sentinel(target: RedisTarget) -> Sentinel | None:
    """The sentinel manager both of a worker's clients ask for the primary (sentinel mode
    only). It holds connections to the sentinels: `close_sentinel()` it at shutdown."""
    if not target.sentinels or target.cluster:
        return None
    return Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        list(target.sentinels),
        sentinel_kwargs={
            "password": target.sentinel_password,
            "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
            "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        },
    )


async def close_sentinel(sentinel: Sentinel | None) -> None:
    if sentinel is not None:
        for client in sentinel.sentinels:
            await client.aclose()


def command_client(target: RedisTarget, sentinel: Sentinel | None = None) -> RedisClient:
    """For rate limits, connection leases, history reads, tickets and readiness: bounded calls.

    One connection per worker (plus the pub/sub one), whatever the number of clients: every
    command is short, lease operations are batched, and callers queue for the connection
    (up to COMMAND_TIMEOUT_SECONDS) instead of opening more.
    """
    options: dict[str, Any] = {
        "max_connections": COMMAND_CONNECTIONS,
        "timeout": COMMAND_TIMEOUT_SECONDS,
        "socket_timeout": COMMAND_TIMEOUT_SECONDS,
        "socket_connect_timeout": COMMAND_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
        "client_name": "gateway",
    }
    if target.cluster:
        assert target.url is not None
        # Connections per node (a batch runs a few per-slot scripts at once; redis_kinds).
        del options["timeout"], options["retry"]
        options["max_connections"] = CLUSTER_CONNECTIONS_PER_NODE
        return RedisCluster.from_url(
            target.url, **options, **_transport_options(target.url, target.verify_tls)
        )
    pool = _pool(target, sentinel, options, aioredis.BlockingConnectionPool, _BlockingSentinelPool)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


def pubsub_connection_factory(
    target: RedisTarget, sentinel: Sentinel | None = None
) -> ConnectionFactory:
    """Connections for the multiplexer: RESP2, no read timeout (a watchdog pings instead)."""
    options: dict[str, Any] = {
        "protocol": 2,
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        "client_name": "gateway-pubsub",
    }
    pool = _pool(target, sentinel, options, aioredis.ConnectionPool, SentinelConnectionPool)
    return pool.make_connection


def _pool(
    target: RedisTarget,
    sentinel: Sentinel | None,
    options: dict[str, Any],
    url_pool: type[aioredis.ConnectionPool],
    sentinel_pool: type[SentinelConnectionPool],
) -> aioredis.ConnectionPool:
    """A pool of `url_pool`'s kind for REDIS_URL, or of `sentinel_pool`'s for the primary the
    sentinels name."""
    if sentinel is not None:
        return sentinel_pool(target.service, sentinel, **options, **_primary_options(target))
    assert target.url is not None
    return url_pool.from_url(
        target.url, **options, **_transport_options(target.url, target.verify_tls)
    )


def cluster_node_connector(target: RedisTarget) -> NodeConnector:
    """Connections to one cluster node at a time, with REDIS_URL's credentials and TLS: RESP2,
    no read timeout (pub/sub: a watchdog pings instead)."""
    assert target.url is not None
    parsed = {
        k: v for k, v in parse_url(target.url).items() if k not in {"host", "port", "db", "path"}
    }
    connection_class: type[aioredis.Connection] = parsed.pop(  # type: ignore[assignment]
        "connection_class", aioredis.Connection
    )
    options: dict[str, Any] = {
        **parsed,
        "protocol": 2,
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        **_transport_options(target.url, target.verify_tls),
    }

    def connect(host: str, port: int, client_name: str) -> aioredis.Connection:
        return connection_class(host=host, port=port, client_name=client_name, **options)

    return connect
