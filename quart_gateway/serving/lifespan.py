"""One worker's lifespan: what starts before the app serves, and stops after, in that order.

    start: embedded server (only without REDIS_URL) ─> Redis clients, multiplexer,
           connection limiter loops and heartbeat (supervised) ─> Services published
    stop:  Services withdrawn ─> supervised loops ─> draining ─> multiplexer ─> connection limiter
           ─> HTTP client ─> Redis client ─> embedded server

`python -m quart_gateway` starts the embedded server before its workers and hands them
REDIS_URL, so a worker starts one only when another ASGI server serves `create_app()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from quart import Quart
from redis.asyncio.sentinel import Sentinel

from quart_gateway.admission.auth import TokenVerifier
from quart_gateway.admission.connection_limit import ConnectionLimiter
from quart_gateway.admission.ratelimit import RateLimiter
from quart_gateway.aio.supervisor import TaskSupervisor
from quart_gateway.hydrate.upstream import create_client
from quart_gateway.live.cluster import ClusterMultiplexer
from quart_gateway.live.heartbeat import run_heartbeat
from quart_gateway.live.history import HistoryReader
from quart_gateway.live.multiplexer import LiveChannels, Multiplexer
from quart_gateway.ops.metrics import Metrics
from quart_gateway.services import EXTENSION_KEY, Services
from quart_gateway.serving.embedded import EmbeddedRedis, start_embedded
from quart_gateway.serving.lifecycle import Lifecycle
from quart_gateway.serving.redis_clients import (
    RedisTarget,
    close_sentinel,
    cluster_node_connector,
    command_client,
    open_sentinel,
    pubsub_connection_factory,
)
from quart_gateway.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """Everything a serving worker started."""

    services: Services
    embedded: EmbeddedRedis | None
    sentinel: Sentinel | None


class Lifespan:
    """`app.before_serving(lifespan.start)`, `app.after_serving(lifespan.stop)`."""

    def __init__(self, app: Quart, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._running: Running | None = None

    async def start(self) -> None:
        settings = self._settings
        embedded: EmbeddedRedis | None = None
        target = RedisTarget.of(settings)
        if settings.embedded:
            # Started from this thread on purpose: the server is tied to its parent thread's
            # lifetime (PR_SET_PDEATHSIG), and a pool thread may exit before we do.
            embedded = start_embedded(settings)
            target = RedisTarget.of(settings, embedded.url)
        metrics = Metrics()
        tasks = TaskSupervisor(on_failure=lambda name: metrics.task_failures.labels(name).inc())
        sentinel = open_sentinel(target)
        redis = command_client(target, sentinel)
        mux: LiveChannels
        if target.cluster:
            mux = ClusterMultiplexer(
                cluster_node_connector(target),
                target.seeds(),
                metrics=metrics,
                max_events=settings.subscriber_queue_events,
                max_bytes=settings.subscriber_queue_bytes,
                probe_interval=settings.redis_probe_interval_seconds,
                canary=redis.spublish,  # routed to the node serving the canary's slot
            )
        else:
            mux = Multiplexer(
                pubsub_connection_factory(target, sentinel),
                metrics=metrics,
                max_events=settings.subscriber_queue_events,
                max_bytes=settings.subscriber_queue_bytes,
                probe_interval=settings.redis_probe_interval_seconds,
                canary=redis.publish,
            )
        metrics.add_listener_gauges(mux.statistics)
        lifecycle = Lifecycle()
        lifecycle.attach(mux)
        connection_limiter = ConnectionLimiter(redis, settings.max_connections_per_user, metrics)
        svc = Services(
            settings=settings,
            metrics=metrics,
            verifier=TokenVerifier(settings),
            lifecycle=lifecycle,
            redis=redis,
            http=create_client(settings),
            mux=mux,
            rate_limiter=RateLimiter(redis, settings.status_rate_limit, metrics, scope="status"),
            connection_limiter=connection_limiter,
            history=HistoryReader(redis),
            tasks=tasks,
        )
        await mux.start()
        connection_limiter.start(tasks)
        interval = settings.heartbeat_interval_seconds
        tasks.start("heartbeat", lambda: run_heartbeat(mux, interval, metrics))
        self._running = Running(services=svc, embedded=embedded, sentinel=sentinel)
        self._app.extensions[EXTENSION_KEY] = svc

    async def stop(self) -> None:
        running, self._running = self._running, None
        self._app.extensions.pop(EXTENSION_KEY, None)
        if running is None:
            return
        svc = running.services
        await svc.tasks.stop()  # heartbeat and lease loops; queued give-backs still go below
        svc.lifecycle.start_draining()
        await svc.mux.stop()
        await svc.connection_limiter.stop()
        await svc.http.aclose()
        await svc.redis.aclose()
        await close_sentinel(running.sentinel)
        if running.embedded is not None:
            running.embedded.stop()
