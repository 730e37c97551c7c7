"""The app factory: `create_app()` reads the environment, so any ASGI server can serve it.

    hypercorn 'quart_gateway.app:create_app()'

`python -m quart_gateway` serves the same app with clean SIGTERM draining and workers.
Construction does no I/O; Redis, the multiplexer and the HTTP client start in the lifespan
(`serving/lifespan.py`).
"""

from __future__ import annotations

import os

from quart import Quart, Response
from quart_schema import Info, QuartSchema, hide

from quart_gateway.admission.cors import CorsPolicy
from quart_gateway.dev import routes as dev
from quart_gateway.errors import install_error_handlers
from quart_gateway.hydrate import routes as status
from quart_gateway.ops import correlation, health, logs
from quart_gateway.serving import ws_compression
from quart_gateway.serving.lifespan import Lifespan
from quart_gateway.settings import Settings
from quart_gateway.streams import sse, tickets
from quart_gateway.streams.dispatch import StreamingQuart


def create_app(settings: Settings | None = None) -> Quart:
    if settings is None:
        settings = Settings.from_env(os.environ)
        logs.configure(settings.log_level, settings.log_format)
    ws_compression.configure(settings.ws_compression)
    app = StreamingQuart("quart_gateway", static_folder="static")
    # `//x` is a 404, not a redirect built from the request's Host header.
    app.url_map.merge_slashes = False
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
    for module in (status, health, sse, tickets):
        app.register_blueprint(module.blueprint)
    if settings.dev_mode:  # /demo and /dev/*: never registered outside dev mode
        app.register_blueprint(dev.blueprint)
    CorsPolicy.of(settings.cors_origins).install(app)
    correlation.install(app)
    install_error_handlers(app)
    lifespan = Lifespan(app, settings)
    app.before_serving(lifespan.start)
    app.after_serving(lifespan.stop)
    return app


def _hide_static_route(app: Quart) -> None:
    """Serve /static/<file> (the browser client), but keep it out of the OpenAPI document."""

    async def static(filename: str) -> Response:
        return await app.send_static_file(filename)

    app.view_functions["static"] = hide(static)
