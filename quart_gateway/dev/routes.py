"""Dev mode only (GATEWAY_DEV_MODE, embedded single-node mode): the live demo and its helpers.

    GET  /demo                  the demo page (static/demo.html, uses /static/demo.js)
    POST /dev/token             {"user_id"} -> {"token", "expires_at"}, signed with JWT_SECRET_KEY
    POST /dev/simulate          {"user_id"} -> 202 {"batch_id"}; publishes a batch run
    GET  /dev/upstream/...      stand-in upstream services (`dev/upstream.py`)

`create_app` registers this blueprint only when `settings.dev_mode` is true, and settings
refuse dev mode together with REDIS_URL. Tokens are minted by `dev/token.py` and batch runs
simulated by `dev/simulator.py`; this module only reads and checks the requests.
"""

from __future__ import annotations

import re

from quart import Blueprint, Response, current_app, request
from quart.typing import ResponseReturnValue
from quart_schema import hide

from quart_gateway.dev import simulator, upstream
from quart_gateway.errors import GatewayError
from quart_gateway.services import services

blueprint = Blueprint("dev", __name__)
blueprint.register_blueprint(upstream.blueprint)

USER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")


class DevRequestError(GatewayError):
    status_code = 400
    code = "invalid_request"
    message = "expected a JSON object with a user_id of 1-64 letters, digits or ._:@-"


async def _user_id() -> str:
    body = await request.get_json(force=True, silent=True)
    user_id = body.get("user_id") if isinstance(body, dict) else None
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise DevRequestError()
    return user_id


@blueprint.get("/demo")
@hide
async def demo() -> Response:
    return await current_app.send_static_file("demo.html")


@blueprint.post("/dev/token")
@hide
async def dev_token() -> ResponseReturnValue:
    """Mint a token as `python -m quart_gateway.dev.token` does (TTL: `ttl_seconds`, 900)."""
    user_id = await _user_id()
    body = await request.get_json(force=True, silent=True)
    ttl = body.get("ttl_seconds", 900) if isinstance(body, dict) else 900
    if not isinstance(ttl, int) or not 10 <= ttl <= 86_400:
        raise DevRequestError()
    # Imported here: `python -m quart_gateway.dev.token` runs that module as __main__, and
    # runpy warns when the package import (app -> this module) has imported it already.
    from quart_gateway.dev.token import mint

    minted = mint(services().settings, user_id, ttl)
    return {"token": minted.token, "expires_at": minted.expires_at}, 200


@blueprint.post("/dev/simulate")
@hide
async def dev_simulate() -> ResponseReturnValue:
    """Start a batch run for a user in the background; its events follow over a few seconds."""
    user_id = await _user_id()
    body = await request.get_json(force=True, silent=True)
    default = simulator.BatchRun.STEP_SECONDS
    step = body.get("step_seconds", default) if isinstance(body, dict) else default
    if not isinstance(step, int | float) or not 0 <= step <= 10:
        raise DevRequestError()
    batch_id = simulator.start(services().redis, user_id, step_seconds=float(step))
    return {"batch_id": batch_id, "user_id": user_id}, 202


@blueprint.after_app_serving
async def _cancel_runs() -> None:
    await simulator.cancel_all()
