"""Typed settings read once from the environment at start-up.

`Settings.from_env(environ)` takes a mapping so tests pass a dict; nothing else in the gateway
reads `os.environ`. A missing or invalid value raises `ConfigError` naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from quart_gateway.errors import ConfigError


class Secret:
    """A string whose repr is masked; take the value with `str()` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}('**********')"

    def __str__(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RateLimit:
    """`N/second|minute|hour|day`: at most `limit` requests per `period_s` seconds."""

    limit: int
    period_s: int

    _UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}  # noqa: RUF012

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*", text)
        count = int(match.group(2) or 1) if match else 0
        if match is None or int(match.group(1)) < 1 or count < 1:
            raise ValueError("expected N/second, N/minute, N/hour or N/day, e.g. 50/minute")
        return cls(limit=int(match.group(1)), period_s=count * cls._UNITS[match.group(3)])

    def __str__(self) -> str:
        return f"{self.limit}/{self.period_s}s"


JWT_HMAC = ("HS256", "HS384", "HS512")
JWT_ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    # --- process ---
    port: int = 8000
    web_concurrency: int = 1
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Seconds between SIGTERM and the hard stop. Heroku allows 30 s in all.
    shutdown_grace_seconds: float = 10.0
    # --- redis ---
    redis_url: Secret | None = None  # None in standalone mode: embedded single-node mode
    # standalone: REDIS_URL. sentinel: the primary of REDIS_SENTINEL_SERVICE as the sentinels
    # REDIS_SENTINELS report it (REDIS_URL, optional, gives its password, db and TLS).
    # cluster: a Redis Cluster, REDIS_URL naming any of its nodes; sharded pub/sub.
    redis_mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_service: str = "mymaster"
    redis_sentinel_password: Secret | None = None
    redis_ssl_verify: bool = False  # rediss:// on Heroku uses self-signed certificates
    # The pub/sub listener pings Redis after this long without traffic, and reconnects after
    # three times this long without an answer (a half-open TCP connection looks healthy).
    redis_probe_interval_seconds: float = 5.0
    # --- auth ---
    jwt_algorithm: str = "HS256"
    jwt_secret_key: Secret | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = 10.0
    # --- upstreams ---
    result_aggregator_url: str = "http://result_aggregator_service:8000"
    bos_url: str = "http://batch_orchestrator_service:8000"
    handle_missing_batches: Literal["query_bos", "return_404"] = "query_bos"
    upstream_timeout_seconds: float = 5.0
    upstream_max_body_bytes: int = 1_048_576  # a larger upstream answer is a 503
    internal_api_key: Secret | None = None
    service_id: str = "api-gateway-service"
    # --- limits ---
    status_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(50, 60))
    max_connections_per_user: int = 10
    # --- stream tickets (docs/protocol.md) ---
    stream_ticket_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(30, 60))
    stream_ticket_ttl_seconds: int = 30
    allow_query_tokens: bool = True  # `?token=<jwt>` on /ws and /events
    # --- streams ---
    heartbeat_interval_seconds: float = 15.0
    sse_retry_ms: int = 3000  # EventSource reconnect delay sent in `retry:` on open
    subscriber_queue_events: int = 1000  # events buffered per connection before SLOW disconnect
    subscriber_queue_bytes: int = 1_048_576  # bytes buffered per connection (1 MiB)
    ws_compression: bool = False  # permessage-deflate costs ~90 KiB per WebSocket connection
    cors_origins: tuple[str, ...] = ()
    # --- dev ---
    dev_mode: bool = False
    admission_max_pending: int = 500  # stream set-ups in flight per worker; more: `overloaded`
    # Stream set-ups started per second per worker (0: no bound). About 70 % of what one core
    # sets up at ~1 ms each, so that a reconnect storm leaves the open streams some CPU.
    admission_max_per_second: int = 700
    max_connection_seconds: float = 0.0  # streams end (jittered) after this long; 0: never

    @property
    def embedded(self) -> bool:
        """No Redis configured: the gateway starts a private one (embedded single-node mode)."""
        return self.redis_mode == "standalone" and self.redis_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = _Env(environ)
        algorithm = env.choice("JWT_ALGORITHM", JWT_HMAC + JWT_ASYMMETRIC, "HS256")
        secret = env.secret("JWT_SECRET_KEY")
        public_key = env.text("JWT_PUBLIC_KEY")
        jwks_url = env.text("JWT_JWKS_URL")
        if algorithm in JWT_HMAC and not secret:
            raise ConfigError("JWT_SECRET_KEY", f"is required for JWT_ALGORITHM={algorithm}")
        if algorithm not in JWT_HMAC and not (public_key or jwks_url):
            raise ConfigError(
                "JWT_PUBLIC_KEY", f"(or JWT_JWKS_URL) is required for JWT_ALGORITHM={algorithm}"
            )
        if public_key:
            public_key = public_key.replace("\\n", "\n")  # one-line PEM in a Heroku config var
        redis_url = env.url("REDIS_URL", ("redis", "rediss", "unix"))
        redis_mode = env.choice("REDIS_MODE", ("standalone", "sentinel", "cluster"), "standalone")
        sentinels = env.addresses("REDIS_SENTINELS")
        if redis_mode == "sentinel" and not sentinels:
            raise ConfigError("REDIS_SENTINELS", "is required with REDIS_MODE=sentinel")
        if redis_mode == "cluster" and (
            redis_url is None or str(redis_url).lower().startswith("unix:")
        ):
            raise ConfigError(
                "REDIS_URL", "(redis:// or rediss://, any node) is required with REDIS_MODE=cluster"
            )
        dev_mode = env.flag("GATEWAY_DEV_MODE", False)
        if dev_mode and (redis_url is not None or redis_mode != "standalone"):
            # Dev mode mints tokens for anyone: it must never reach a shared deployment.
            raise ConfigError(
                "GATEWAY_DEV_MODE",
                "is only allowed in embedded single-node mode; unset REDIS_URL or dev mode",
            )
        return cls(
            port=env.integer("PORT", 8000, low=1, high=65535),
            web_concurrency=env.integer("WEB_CONCURRENCY", 1, low=1, high=64),
            log_level=env.choice(
                "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO", upper=True
            ),
            log_format=env.choice("LOG_FORMAT", ("json", "text"), "json"),  # type: ignore[arg-type]
            shutdown_grace_seconds=env.number("SHUTDOWN_GRACE_SECONDS", 10.0, low=0.5),
            redis_url=redis_url,
            redis_mode=redis_mode,  # type: ignore[arg-type]
            redis_sentinels=sentinels,
            redis_sentinel_service=env.text("REDIS_SENTINEL_SERVICE") or "mymaster",
            redis_sentinel_password=env.secret("REDIS_SENTINEL_PASSWORD"),
            redis_ssl_verify=env.flag("REDIS_SSL_VERIFY", False),
            redis_probe_interval_seconds=env.number("REDIS_PROBE_INTERVAL_SECONDS", 5.0, low=0.05),
            jwt_algorithm=algorithm,
            jwt_secret_key=secret,
            jwt_public_key=public_key,
            jwt_jwks_url=jwks_url,
            jwt_audience=env.text("JWT_AUDIENCE"),
            jwt_issuer=env.text("JWT_ISSUER"),
            jwt_leeway_seconds=env.number("JWT_LEEWAY_SECONDS", 10.0, low=0),
            result_aggregator_url=env.http_url(
                "RESULT_AGGREGATOR_URL", "http://result_aggregator_service:8000"
            ),
            bos_url=env.http_url("BOS_URL", "http://batch_orchestrator_service:8000"),
            handle_missing_batches=env.choice(  # type: ignore[arg-type]
                "HANDLE_MISSING_BATCHES", ("query_bos", "return_404"), "query_bos"
            ),
            upstream_timeout_seconds=env.number("UPSTREAM_TIMEOUT_SECONDS", 5.0, low=0.05),
            upstream_max_body_bytes=env.integer("UPSTREAM_MAX_BODY_BYTES", 1_048_576, low=1024),
            internal_api_key=env.secret("INTERNAL_API_KEY"),
            service_id=env.text("SERVICE_ID") or "api-gateway-service",
            status_rate_limit=env.rate("STATUS_RATE_LIMIT", "50/minute"),
            max_connections_per_user=env.integer("MAX_CONNECTIONS_PER_USER", 10, low=1),
            stream_ticket_rate_limit=env.rate("STREAM_TICKET_RATE_LIMIT", "30/minute"),
            stream_ticket_ttl_seconds=env.integer(
                "STREAM_TICKET_TTL_SECONDS", 30, low=1, high=3600
            ),
            allow_query_tokens=env.flag("ALLOW_QUERY_TOKENS", True),
            heartbeat_interval_seconds=env.number("HEARTBEAT_INTERVAL_SECONDS", 15.0, low=0.05),
            sse_retry_ms=env.integer("SSE_RETRY_MS", 3000, low=0),
            subscriber_queue_events=env.integer("SUBSCRIBER_QUEUE_EVENTS", 1000, low=1),
            subscriber_queue_bytes=env.integer("SUBSCRIBER_QUEUE_BYTES", 1_048_576, low=1024),
            ws_compression=env.flag("WS_COMPRESSION", False),
            cors_origins=env.items("CORS_ORIGINS"),
            dev_mode=dev_mode,
            admission_max_pending=env.integer("ADMISSION_MAX_PENDING", 500, low=1),
            admission_max_per_second=env.integer("ADMISSION_MAX_PER_SECOND", 700, low=0),
            max_connection_seconds=env.number("MAX_CONNECTION_SECONDS", 0.0, low=0.0),
        )


class _Env:
    """Typed accessors over the environment; every error names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def secret(self, name: str) -> Secret | None:
        value = self.text(name)
        return Secret(value) if value else None

    def integer(
        self, name: str, default: int, *, low: int | None = None, high: int | None = None
    ) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {raw!r}") from None
        self._check_range(name, value, low, high)
        return value

    def number(self, name: str, default: float, *, low: float | None = None) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(name, f"must be a finite number, got {raw!r}")
        self._check_range(name, value, low, None)
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {raw!r}")

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, *, upper: bool = False
    ) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}; got {raw!r}")
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> Secret | None:
        raw = self.text(name)
        if raw is None:
            return None
        scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
        if scheme not in schemes:
            # Do not echo the value: it may hold a password.
            raise ConfigError(name, f"must be a URL with scheme {', '.join(schemes)}")
        return Secret(raw)

    def http_url(self, name: str, default: str) -> str:
        raw = self.text(name) or default
        if not re.match(r"^https?://[^/\s]+", raw):
            raise ConfigError(name, f"must be an http(s) URL, got {raw!r}")
        return raw.rstrip("/")

    def rate(self, name: str, default: str) -> RateLimit:
        raw = self.text(name) or default
        try:
            return RateLimit.parse(raw)
        except ValueError as exc:
            raise ConfigError(name, f"{exc}; got {raw!r}") from None

    def addresses(self, name: str) -> tuple[tuple[str, int], ...]:
        """`host:port,host:port,...`"""
        found = []
        for item in self.items(name):
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(name, f"must be host:port pairs, comma-separated; got {item!r}")
            found.append((host.strip("[]"), int(port)))
        return tuple(found)

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return ()
        return tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())

    @staticmethod
    def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise ConfigError(name, f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ConfigError(name, f"must be at most {high}, got {value}")
