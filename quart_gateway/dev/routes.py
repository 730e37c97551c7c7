"""Dev mode only (GATEWAY_DEV_MODE, embedded single-node mode): the live demo and its helpers.

    GET  /demo                  the demo page (uses /static/gateway-client.js)
    POST /dev/token             {"user_id"} -> {"token", "expires_at"}, signed with JWT_SECRET_KEY
    POST /dev/simulate          {"user_id"} -> 202 {"batch_id"}; publishes a batch run
    GET  /dev/upstream/internal/v1/batches/<id>/status          stand-in result aggregator
    GET  /dev/upstream/internal/v1/batches/<id>/pipeline-state  stand-in BOS (always 404)

`create_app` registers this blueprint only when `settings.dev_mode` is true, and settings
refuse dev mode together with REDIS_URL. The simulated batch state lives in the gateway's own
Redis, so hydration through /v1/batches/<id>/status works once RESULT_AGGREGATOR_URL points at
/dev/upstream (scripts/dev sets it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from contextlib import suppress
from typing import Any

import jwt
import redis.asyncio as aioredis
from quart import Blueprint, Response, request
from quart_schema import hide

from events.catalog import utc_now_iso as now_iso
from publishers import (
    BatchOrchestratorPublisher,
    EssayLifecyclePublisher,
    EventPublisher,
    FileServicePublisher,
)
from quart_gateway.errors import GatewayError
from quart_gateway.services import services
from quart_gateway.settings import JWT_HMAC

logger = logging.getLogger(__name__)

blueprint = Blueprint("dev", __name__)

STATE_PREFIX = "dev-demo:batch:"
STATE_TTL_SECONDS = 86_400
USER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
_runs: set[asyncio.Task[None]] = set()

DEMO_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Realtime gateway demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
  header { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap;
           padding: .8rem 1.2rem; background: #1d2330; color: #fff; }
  header h1 { font-size: 1.1rem; margin: 0 1rem 0 0; }
  header label { display: flex; gap: .4rem; align-items: center; }
  input, select, button { font: inherit; padding: .25rem .5rem; }
  button { cursor: pointer; }
  #connection { display: flex; gap: .4rem; align-items: center; margin-left: auto; }
  #connection::before { content: ""; width: .8rem; height: .8rem; border-radius: 50%;
                        background: #999; }
  #connection[data-state="open"]::before { background: #2fb344; }
  #connection[data-state="connecting"]::before,
  #connection[data-state="waiting"]::before { background: #f59f00; }
  #connection[data-state="auth_failed"]::before { background: #d63939; }
  main { display: grid; grid-template-columns: minmax(18rem, 1fr) 2fr; gap: 1rem; padding: 1rem; }
  section { background: #fff; border-radius: 6px; padding: .8rem 1rem;
            box-shadow: 0 1px 2px #0002; min-width: 0; }
  h2 { font-size: 1rem; margin: 0 0 .6rem; }
  #error { display: none; margin: 1rem 1rem 0; padding: .6rem 1rem; border-radius: 6px;
           background: #fde8e8; color: #9b1c1c; }
  #error.shown { display: block; }
  .batch { border: 1px solid #e3e6eb; border-radius: 4px; padding: .5rem .7rem;
           margin-bottom: .6rem; }
  .batch table { border-collapse: collapse; width: 100%; font-size: .9rem; }
  .batch td { padding: .1rem .3rem; border-top: 1px solid #f0f1f4; }
  #events { list-style: none; margin: 0; padding: 0; font: 13px/1.5 ui-monospace, monospace; }
  #events li { padding: .2rem 0; border-bottom: 1px solid #f0f1f4; overflow-wrap: anywhere; }
  #events .type { font-weight: 600; color: #206bc4; }
  #events .meta { color: #6b7280; }
  .empty { color: #6b7280; }
</style>
</head>
<body>
<header>
  <h1>Realtime gateway demo</h1>
  <label>User <input id="user" value="demo-user" size="12"></label>
  <label>Transport
    <select id="transport">
      <option value="sse">SSE (EventSource)</option>
      <option value="ws">WebSocket</option>
    </select>
  </label>
  <button id="simulate" type="button">Start a batch run</button>
  <span id="connection" data-state="connecting">connecting</span>
</header>
<div id="error" role="alert"></div>
<main>
  <section>
    <h2>Batch status <small class="meta">(hydrated from /v1/batches/&lt;id&gt;/status)</small></h2>
    <div id="batches"><p class="empty">No batch yet: start a batch run.</p></div>
  </section>
  <section>
    <h2>Live events</h2>
    <ol id="events"></ol>
  </section>
</main>
<script type="module" src="/static/demo.js"></script>
</body>
</html>
"""


class DevRequestError(GatewayError):
    status_code = 400
    code = "invalid_request"
    message = "expected a JSON object with a user_id of 1-64 letters, digits or ._:@-"


class DevTokenUnavailableError(GatewayError):
    status_code = 501
    code = "dev_token_unavailable"
    message = "dev tokens are signed with JWT_SECRET_KEY; set an HS* JWT_ALGORITHM"


async def _user_id() -> str:
    body = await request.get_json(force=True, silent=True)
    user_id = body.get("user_id") if isinstance(body, dict) else None
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise DevRequestError()
    return user_id


@blueprint.get("/demo")
@hide
async def demo() -> Response:
    return Response(DEMO_PAGE, content_type="text/html; charset=utf-8")


@blueprint.post("/dev/token")
@hide
async def dev_token() -> Any:  # a JSON body and a status
    """Mint a token as `python -m quart_gateway.dev.token` does (TTL: `ttl_seconds`, 900)."""
    user_id = await _user_id()
    body = await request.get_json(force=True, silent=True)
    ttl = body.get("ttl_seconds", 900) if isinstance(body, dict) else 900
    if not isinstance(ttl, int) or not 10 <= ttl <= 86_400:
        raise DevRequestError()
    settings = services().settings
    if settings.jwt_algorithm not in JWT_HMAC or settings.jwt_secret_key is None:
        raise DevTokenUnavailableError()
    expires_at = int(time.time()) + ttl
    claims: dict[str, Any] = {"sub": user_id, "exp": expires_at}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    token = jwt.encode(claims, str(settings.jwt_secret_key), algorithm=settings.jwt_algorithm)
    return {"token": token, "expires_at": expires_at}, 200


@blueprint.post("/dev/simulate")
@hide
async def dev_simulate() -> Any:  # a JSON body and a status
    """Start a batch run for a user in the background; its events follow over a few seconds."""
    user_id = await _user_id()
    body = await request.get_json(force=True, silent=True)
    step = body.get("step_seconds", BatchRun.STEP_SECONDS) if isinstance(body, dict) else 0.7
    if not isinstance(step, int | float) or not 0 <= step <= 10:
        raise DevRequestError()
    svc = services()
    batch_id = f"batch-{uuid.uuid4().hex[:8]}"
    run = BatchRun(svc.redis, user_id, batch_id, step_seconds=float(step))
    task = asyncio.create_task(_run_batch(run), name=f"demo {batch_id}")
    _runs.add(task)
    task.add_done_callback(_runs.discard)
    return {"batch_id": batch_id, "user_id": user_id}, 202


@blueprint.after_app_serving
async def _cancel_runs() -> None:
    for task in list(_runs):
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@blueprint.get("/dev/upstream/internal/v1/batches/<batch_id>/status")
@hide
async def upstream_status(batch_id: str) -> Any:  # a JSON body and a status
    """Answers like the result aggregator: `{batch_id, user_id, pipeline_state, last_updated}`."""
    raw = await services().redis.get(STATE_PREFIX + batch_id)
    if raw is None:
        return {"detail": "batch not found"}, 404
    return json.loads(raw), 200


@blueprint.get("/dev/upstream/internal/v1/batches/<batch_id>/pipeline-state")
@hide
async def upstream_pipeline_state(batch_id: str) -> Any:  # a JSON body and a status
    """The stand-in orchestrator knows no more than the stand-in aggregator: always 404."""
    return {"detail": "batch not found"}, 404


async def _run_batch(run: BatchRun) -> None:
    try:
        await run.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("demo batch run failed", extra={"batch_id": run.batch_id})


class BatchRun:
    """A batch run as the services would publish it, with its state kept for the stand-ins.

    Every step updates the state first and publishes after, so a client that hydrates on an
    event sees at least that event's effect.
    """

    ESSAYS = ("essay-1", "essay-2", "essay-3")
    STEP_SECONDS = 0.7

    def __init__(
        self, redis: aioredis.Redis, user_id: str, batch_id: str, *, step_seconds: float
    ) -> None:
        self._redis = redis
        self._user_id = user_id
        self.batch_id = batch_id
        self._step_seconds = step_seconds
        self._publisher = EventPublisher(redis)
        self._state: dict[str, Any] = {
            "phase": "file_upload",
            "locked": False,
            "essays": {},
            "spellcheck": "pending",
        }

    async def run(self) -> None:
        files = FileServicePublisher(self._publisher)
        orchestrator = BatchOrchestratorPublisher(self._publisher)
        essays = EssayLifecyclePublisher(self._publisher)
        batch, user = self.batch_id, self._user_id
        await self._save()
        for essay in self.ESSAYS:
            await self._step(essays={**self._state["essays"], essay: "uploaded"})
            await files.publish_file_added_event(batch, essay, f"{essay}.docx", user)
        await self._step(phase="spellcheck", locked=True, spellcheck="running")
        await orchestrator.publish_phase_initiated_event(batch, "spellcheck", user)
        for essay in self.ESSAYS:
            await self._step(essays={**self._state["essays"], essay: "spellchecked_success"})
            await essays.publish_essay_status_updated_event(
                batch, essay, "spellchecked_success", user, phase="spellcheck"
            )
        await self._step(spellcheck="completed", phase="completed")
        await orchestrator.publish_batch_phase_concluded_event(
            batch, "spellcheck", "completed", user
        )

    async def _step(self, **changes: Any) -> None:
        await asyncio.sleep(self._step_seconds)
        self._state.update(changes)
        await self._save()

    async def _save(self) -> None:
        now = now_iso()
        self._state["last_updated"] = now
        record = {
            "batch_id": self.batch_id,
            "user_id": self._user_id,
            "pipeline_state": self._state,
            "last_updated": now,
        }
        await self._redis.set(
            STATE_PREFIX + self.batch_id, json.dumps(record), ex=STATE_TTL_SECONDS
        )
