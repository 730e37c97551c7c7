"""GET /v1/batches/{id}/status against a real Redis and real loopback upstreams."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
from quart import Quart

from quart_gateway.settings import RateLimit, Secret
from tests.servers import SettingsFactory, running_app
from tests.support import Reply, Upstream, make_token

AGG = "/internal/v1/batches/{}/status"
BOS = "/internal/v1/batches/{}/pipeline-state"


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}"}


async def get_status(app: Quart, batch_id: str, headers: dict[str, str]) -> Any:
    return await app.test_client().get(f"/v1/batches/{batch_id}/status", headers=headers)


def all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


async def test_owned_batch_from_the_aggregator(
    app: Quart, upstream: Upstream, user_id: str
) -> None:
    upstream.reply(
        AGG.format("b1"),
        Reply(
            body={
                "batch_id": "b1",
                "user_id": user_id,
                "pipeline_state": {"spellcheck": {"status": "done", "user_id": user_id}},
                "last_updated": "2026-11-26T10:00:00Z",
            }
        ),
    )
    response = await get_status(app, "b1", auth(user_id))
    assert response.status_code == 200
    body = await response.get_json()
    assert body == {
        "batch_id": "b1",
        "pipeline_state": {"spellcheck": {"status": "done"}},
        "last_updated": "2026-11-26T10:00:00Z",
        "status": "available",
    }
    assert "user_id" not in all_keys(body)


async def test_batch_of_another_user_is_403_not_500(
    app: Quart, upstream: Upstream, user_id: str
) -> None:
    upstream.reply(
        AGG.format("b2"),
        Reply(
            body={
                "batch_id": "b2",
                "user_id": "owner-xyz",
                "pipeline_state": {},
                "last_updated": None,
            }
        ),
    )
    response = await get_status(app, "b2", auth(user_id))
    assert response.status_code == 403
    body = await response.get_json()
    assert body["error"]["code"] == "forbidden"
    assert "owner-xyz" not in json.dumps(body)


async def test_missing_owner_fails_closed(app: Quart, upstream: Upstream, user_id: str) -> None:
    upstream.reply(AGG.format("b3"), Reply(body={"batch_id": "b3", "pipeline_state": {}}))
    response = await get_status(app, "b3", auth(user_id))
    assert response.status_code == 502
    assert (await response.get_json())["error"]["code"] == "ownership_unknown"


async def test_bos_fallback_real_nested_shape(app: Quart, upstream: Upstream, user_id: str) -> None:
    upstream.reply(
        BOS.format("b4"),
        Reply(
            body={
                "batch_id": "b4",
                "user_id": user_id,
                "pipeline_state": {
                    "user_id": user_id,
                    "last_updated": "2026-11-26T09:00:00Z",
                    "requested_pipelines": ["spellcheck"],
                    "spellcheck": {"status": "in_progress"},
                },
            }
        ),
    )
    response = await get_status(app, "b4", auth(user_id))
    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "pending_aggregation"
    assert body["last_updated"] == "2026-11-26T09:00:00Z"
    assert body["pipeline_state"]["spellcheck"] == {"status": "in_progress"}
    assert "user_id" not in all_keys(body)
    assert user_id not in json.dumps(body)


async def test_bos_fallback_flat_shape(app: Quart, upstream: Upstream, user_id: str) -> None:
    upstream.reply(
        BOS.format("b5"),
        Reply(
            body={"batch_id": "b5", "user_id": user_id, "spellcheck": "pending", "updated_at": "t1"}
        ),
    )
    body = await (await get_status(app, "b5", auth(user_id))).get_json()
    assert body["pipeline_state"] == {"spellcheck": "pending", "updated_at": "t1"}
    assert body["last_updated"] == "t1"


async def test_bos_fallback_enforces_ownership(
    app: Quart, upstream: Upstream, user_id: str
) -> None:
    upstream.reply(
        BOS.format("b6"),
        Reply(body={"batch_id": "b6", "user_id": "someone-else", "pipeline_state": {}}),
    )
    response = await get_status(app, "b6", auth(user_id))
    assert response.status_code == 403
    assert "someone-else" not in (await response.get_data(as_text=True))


async def test_unknown_everywhere_is_404(app: Quart, upstream: Upstream, user_id: str) -> None:
    response = await get_status(app, "nowhere", auth(user_id))
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"
    paths = [p for p, _ in upstream.requests]
    assert paths == [AGG.format("nowhere"), BOS.format("nowhere")]


async def test_return_404_mode_skips_bos(
    make_settings: SettingsFactory, upstream: Upstream, user_id: str
) -> None:
    upstream.reply(
        BOS.format("b7"), Reply(body={"batch_id": "b7", "user_id": user_id, "pipeline_state": {}})
    )
    async with running_app(make_settings(handle_missing_batches="return_404")) as app:
        response = await get_status(app, "b7", auth(user_id))
    assert response.status_code == 404
    assert [p for p, _ in upstream.requests] == [AGG.format("b7")]


@pytest.mark.parametrize("status", [500, 502, 401, 400])
async def test_aggregator_errors_are_503(
    app: Quart, upstream: Upstream, user_id: str, status: int
) -> None:
    upstream.reply(AGG.format("b8"), Reply(status, {"detail": "boom"}))
    response = await get_status(app, "b8", auth(user_id))
    assert response.status_code == 503
    assert (await response.get_json())["error"]["code"] == "upstream_unavailable"


async def test_bos_errors_are_503(app: Quart, upstream: Upstream, user_id: str) -> None:
    upstream.reply(BOS.format("b9"), Reply(500, {}))
    assert (await get_status(app, "b9", auth(user_id))).status_code == 503


async def test_non_json_body_is_503(app: Quart, upstream: Upstream, user_id: str) -> None:
    upstream.reply(AGG.format("b10"), Reply(raw=b"<html>oops</html>"))
    assert (await get_status(app, "b10", auth(user_id))).status_code == 503


async def test_unreachable_upstream_is_503(make_settings: SettingsFactory, user_id: str) -> None:
    settings = make_settings(
        result_aggregator_url="http://127.0.0.1:9", bos_url="http://127.0.0.1:9"
    )
    async with running_app(settings) as app:
        response = await get_status(app, "b11", auth(user_id))
    assert response.status_code == 503


async def test_slow_upstream_is_answered_within_the_bound(
    make_settings: SettingsFactory, upstream: Upstream, user_id: str
) -> None:
    upstream.reply(AGG.format("slow"), Reply(body={}, delay=3.0))
    async with running_app(make_settings(upstream_timeout_seconds=0.3)) as app:
        started = time.monotonic()
        response = await get_status(app, "slow", auth(user_id))
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert (await response.get_json())["error"]["code"] == "upstream_timeout"
    assert elapsed < 2.0  # the 3 s upstream was not waited for


async def test_internal_headers_and_correlation_id_go_upstream(
    make_settings: SettingsFactory, upstream: Upstream, user_id: str
) -> None:
    upstream.reply(
        AGG.format("b12"),
        Reply(
            body={"batch_id": "b12", "user_id": user_id, "pipeline_state": {}, "last_updated": None}
        ),
    )
    settings = make_settings(internal_api_key=Secret("internal-key"), service_id="gw-test")
    async with running_app(settings) as app:
        response = await get_status(app, "b12", {**auth(user_id), "X-Correlation-ID": "corr-123"})
    assert response.status_code == 200
    assert response.headers["X-Correlation-ID"] == "corr-123"
    sent = upstream.headers_of(AGG.format("b12"))
    assert sent["x-correlation-id"] == "corr-123"
    assert sent["x-internal-api-key"] == "internal-key"
    assert sent["x-service-id"] == "gw-test"


async def test_no_internal_headers_without_a_key(
    app: Quart, upstream: Upstream, user_id: str
) -> None:
    await get_status(app, "b13", auth(user_id))
    sent = upstream.headers_of(AGG.format("b13"))
    assert "x-internal-api-key" not in sent
    assert "x-service-id" not in sent


async def test_correlation_id_is_generated_when_absent_or_unsafe(app: Quart, user_id: str) -> None:
    first = await get_status(app, "b14", auth(user_id))
    assert len(first.headers["X-Correlation-ID"]) == 32
    second = await get_status(app, "b14", {**auth(user_id), "X-Correlation-ID": "bad\x01id " * 40})
    assert second.headers["X-Correlation-ID"] != "bad\x01id " * 40


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {make_token('u')}"},
        {"Authorization": f"Bearer {make_token('u', expires_in=-30)}"},
        {"Authorization": f"Bearer {make_token('u', key='wrong-key-long-enough-for-hs256!!')}"},
        {"Authorization": f"Bearer {make_token(None)}"},
    ],
)
async def test_auth_failures_are_401_json(
    app: Quart, upstream: Upstream, headers: dict[str, str]
) -> None:
    response = await get_status(app, "b15", headers)
    assert response.status_code == 401
    body = await response.get_json()
    assert body["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert upstream.requests == []  # nothing reached the upstreams


async def test_authentication_comes_before_input_validation(app: Quart) -> None:
    response = await get_status(app, "a" * 200, {})
    assert response.status_code == 401


async def test_invalid_batch_id_is_400(app: Quart, user_id: str) -> None:
    response = await get_status(app, "..%2F..%2Fadmin", auth(user_id))
    assert response.status_code in (400, 404)
    response = await get_status(app, "a" * 200, auth(user_id))
    assert response.status_code == 400
    assert (await response.get_json())["error"]["code"] == "invalid_batch_id"


async def test_rate_limit_gives_429_with_retry_after(
    make_settings: SettingsFactory, upstream: Upstream, user_id: str
) -> None:
    async with running_app(make_settings(status_rate_limit=RateLimit(3, 60))) as app:
        codes = [(await get_status(app, "rl", auth(user_id))).status_code for _ in range(3)]
        limited = await get_status(app, "rl", auth(user_id))
        other_user = await get_status(app, "rl", auth(user_id + "-other"))
    assert codes == [404, 404, 404]
    assert limited.status_code == 429
    assert (await limited.get_json())["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert other_user.status_code == 404  # per user


async def test_rate_limit_is_shared_by_app_instances(
    make_settings: SettingsFactory, user_id: str
) -> None:
    """Two workers (two apps) count against one limit, because it lives in Redis."""
    settings = make_settings(status_rate_limit=RateLimit(2, 60))
    async with running_app(settings) as first, running_app(settings) as second:
        assert (await get_status(first, "x", auth(user_id))).status_code == 404
        assert (await get_status(second, "x", auth(user_id))).status_code == 404
        assert (await get_status(first, "x", auth(user_id))).status_code == 429


async def test_rate_limit_fails_open_when_redis_is_down(
    make_settings: SettingsFactory, upstream: Upstream, user_id: str
) -> None:
    settings = dataclasses.replace(
        make_settings(status_rate_limit=RateLimit(1, 60)), redis_url=Secret("redis://127.0.0.1:9/0")
    )
    async with running_app(settings) as app:
        codes = [(await get_status(app, "down", auth(user_id))).status_code for _ in range(3)]
        metrics = await (await app.test_client().get("/metrics")).get_data(as_text=True)
    assert codes == [404, 404, 404]
    assert 'gateway_redis_errors_total{operation="rate_limit"} 3.0' in metrics


async def test_unknown_route_is_json_404(app: Quart) -> None:
    response = await app.test_client().get("/nope")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


async def test_openapi_documents_the_endpoint(app: Quart) -> None:
    spec = await (await app.test_client().get("/openapi.json")).get_json()
    operation = spec["paths"]["/v1/batches/{batch_id}/status"]["get"]
    assert {"200", "401", "403", "404", "429", "503", "504"} <= set(operation["responses"])
    assert "BatchStatusResponse" in json.dumps(spec)
