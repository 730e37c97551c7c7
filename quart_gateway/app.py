"""The app factory: `create_app()` reads the environment, so any ASGI server can serve it.

    hypercorn 'quart_gateway.app:create_app()'

`python -m quart_gateway` serves the same app with clean SIGTERM draining and workers.
Construction does no I/O; Redis, the multiplexer and the HTTP client start in the lifespan.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from contextlib import suppress
from typing import Any

from quart import Quart, Response, g, request
from quart_cors import cors
from quart_schema import Info, QuartSchema, hide
from werkzeug.exceptions import HTTPException

from quart_gateway.admission.auth import TokenVerifier
from quart_gateway.admission.connection_limit import ConnectionLimiter
from quart_gateway.admission.ratelimit import RateLimiter
from quart_gateway.dev import routes as dev
from quart_gateway.errors import GatewayError
from quart_gateway.hydrate import routes as status
from quart_gateway.hydrate.upstream import create_client
from quart_gateway.live.history import HistoryReader
from quart_gateway.live.multiplexer import Multiplexer
from quart_gateway.live.messages import ping_frame
from quart_gateway.ops import health, logs
from quart_gateway.ops.correlation import CORRELATION_HEADER, correlation_id
from quart_gateway.ops.metrics import Metrics
from quart_gateway.services import EXTENSION_KEY, Services
from quart_gateway.serving import ws_compression
from quart_gateway.serving.embedded import EmbeddedRedis, default_directory
from quart_gateway.serving.lifecycle import Lifecycle
from quart_gateway.serving.redis_clients import command_client, pubsub_connection_factory
from quart_gateway.settings import Settings
from quart_gateway.streams import sse
from quart_gateway.streams.dispatch import StreamDispatcher

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Quart:
    if settings is None:
        settings = Settings.from_env(os.environ)
        logs.configure(settings.log_level, settings.log_format)
    ws_compression.configure(settings.ws_compression)
    app = Quart("quart_gateway", static_folder="static")
    _hide_static_route(app)
    app.config["SETTINGS"] = settings
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = None  # revalidate /static: the client changes
    QuartSchema(
        app,
        info=Info(title="Realtime client gateway", version="0.1.0"),
        security_schemes={
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}
        },
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    for module in (status, health, sse):
        app.register_blueprint(module.blueprint)
    if settings.dev_mode:  # /demo and /dev/*: never registered outside dev mode
        app.register_blueprint(dev.blueprint)
    if settings.cors_origins:
        cors(
            app,
            allow_origin=list(settings.cors_origins),
            allow_headers=["Authorization", "Last-Event-ID", "Content-Type", CORRELATION_HEADER],
            allow_methods=["GET", "OPTIONS"],
            expose_headers=[CORRELATION_HEADER, "Retry-After"],
            max_age=600,
        )
    _install_request_context(app)
    _install_error_handlers(app)
    _install_lifespan(app, settings)
    app.asgi_app = StreamDispatcher(app, app.asgi_app)  # type: ignore[method-assign,assignment]
    return app


def _hide_static_route(app: Quart) -> None:
    """Serve /static/<file> (the browser client), but keep it out of the OpenAPI document."""

    async def static(filename: str) -> Response:
        return await app.send_static_file(filename)

    app.view_functions["static"] = hide(static)


def _install_request_context(app: Quart) -> None:
    @app.before_request
    async def _bind_request() -> None:
        g.correlation_id = correlation_id(request.headers.get(CORRELATION_HEADER))
        logs.bind(correlation_id=g.correlation_id)

    @app.after_request
    async def _echo(response: Any) -> Any:
        correlation_id = getattr(g, "correlation_id", None)
        if correlation_id:
            response.headers[CORRELATION_HEADER] = correlation_id
        return response


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _install_error_handlers(app: Quart) -> None:
    @app.errorhandler(GatewayError)
    async def _gateway_error(error: GatewayError) -> Any:
        level = logging.WARNING if error.status_code >= 500 else logging.INFO
        logger.log(level, "request failed: %s", error.code, extra={"status": error.status_code})
        return _error_body(error.code, error.message), error.status_code, error.headers()

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        status = error.code or 500
        headers = dict(error.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return _error_body(code, error.description or error.name or "Error"), status, headers

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Any:
        logger.exception("unhandled error")
        return _error_body("internal_error", "Internal server error"), 500


def _install_lifespan(app: Quart, settings: Settings) -> None:
    state: dict[str, Any] = {}

    @app.before_serving
    async def _start() -> None:
        url = str(settings.redis_url) if settings.redis_url else None
        if url is None:
            # Started from this thread on purpose: the server is tied to its parent thread's
            # lifetime (PR_SET_PDEATHSIG), and a pool thread may exit before we do.
            embedded = EmbeddedRedis(directory=default_directory(settings.port))
            url = embedded.start()
            state["embedded"] = embedded
            logger.info(
                "no REDIS_URL: embedded single-node mode; redis-cli -s %s", embedded.socket_path
            )
        metrics = Metrics()
        redis = command_client(url, verify_tls=settings.redis_ssl_verify)
        mux = Multiplexer(
            pubsub_connection_factory(url, verify_tls=settings.redis_ssl_verify),
            metrics=metrics,
            max_events=settings.subscriber_queue_events,
            max_bytes=settings.subscriber_queue_bytes,
            probe_interval=settings.redis_probe_interval_seconds,
        )
        metrics.add_listener_gauges(lambda: _listener_numbers(mux))
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
        )
        await mux.start()
        await connection_limiter.start()
        state["heartbeat"] = asyncio.create_task(
            _heartbeat(mux, settings.heartbeat_interval_seconds), name="heartbeat"
        )
        app.extensions[EXTENSION_KEY] = svc

    @app.after_serving
    async def _stop() -> None:
        svc: Services | None = app.extensions.pop(EXTENSION_KEY, None)
        heartbeat = state.pop("heartbeat", None)
        if heartbeat is not None:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat
        if svc is not None:
            svc.lifecycle.start_draining()
            await svc.mux.stop()
            await svc.connection_limiter.stop()
            await svc.http.aclose()
            await svc.redis.aclose()
        embedded: EmbeddedRedis | None = state.pop("embedded", None)
        if embedded is not None:
            embedded.stop()


def _listener_numbers(mux: Multiplexer) -> tuple[float, int, int, bool]:
    stats = mux.statistics()
    return stats.seconds_since_heard, stats.channels, stats.subscribers, stats.healthy


HEARTBEAT_SLOTS = 8


async def _heartbeat(mux: Multiplexer, interval: float) -> None:
    """A `ping` for every live connection once per interval, spread over the interval: each
    tick pings one slot of connections, with one frame encoded for all of them."""
    for tick in itertools.count():
        await asyncio.sleep(interval / HEARTBEAT_SLOTS)
        try:
            mux.broadcast(ping_frame(), slot=tick % HEARTBEAT_SLOTS, slots=HEARTBEAT_SLOTS)
        except Exception:  # a task root: without pings every client would reconnect
            logger.exception("heartbeat failed; continuing")
