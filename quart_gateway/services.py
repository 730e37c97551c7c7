"""Everything a request handler needs, built once per worker in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from quart import current_app

from quart_gateway.admission.auth import TokenVerifier
from quart_gateway.admission.connection_limit import ConnectionLimiter
from quart_gateway.admission.cors import CorsPolicy
from quart_gateway.admission.overload import SetupGate
from quart_gateway.admission.ratelimit import RateLimiter
from quart_gateway.admission.tickets import TicketStore
from quart_gateway.aio.supervisor import TaskSupervisor
from quart_gateway.live.history import HistoryReader
from quart_gateway.live.multiplexer import LiveChannels
from quart_gateway.ops.metrics import Metrics
from quart_gateway.redis_kinds import RedisClient
from quart_gateway.serving.lifecycle import Lifecycle
from quart_gateway.settings import Settings

EXTENSION_KEY = "gateway"


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    verifier: TokenVerifier
    lifecycle: Lifecycle
    redis: RedisClient
    http: httpx.AsyncClient
    mux: LiveChannels
    rate_limiter: RateLimiter
    connection_limiter: ConnectionLimiter
    history: HistoryReader
    tasks: TaskSupervisor
    cors: CorsPolicy = field(init=False)
    setup_gate: SetupGate = field(init=False)
    tickets: TicketStore = field(init=False)
    ticket_rate_limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.cors = CorsPolicy.of(self.settings.cors_origins)
        self.setup_gate = SetupGate(
            self.settings.admission_max_pending, self.settings.admission_max_per_second
        )
        self.tickets = TicketStore(
            self.redis, self.settings.stream_ticket_ttl_seconds, self.metrics
        )
        self.ticket_rate_limiter = RateLimiter(
            self.redis, self.settings.stream_ticket_rate_limit, self.metrics, scope="stream-ticket"
        )


def services() -> Services:
    found = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(found, Services):
        raise RuntimeError("gateway services are not running (is the app serving?)")
    return found
