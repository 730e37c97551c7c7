"""Dev-mode routes exist only in dev mode (no browser needed)."""

from __future__ import annotations

import jwt
import pytest

from quart_gateway.openapi import openapi_document
from tests.servers import SettingsFactory, running_app
from tests.support import SECRET

DEV_ROUTES = [
    ("GET", "/demo"),
    ("POST", "/dev/token"),
    ("POST", "/dev/simulate"),
    ("GET", "/dev/upstream/internal/v1/batches/b-1/status"),
    ("GET", "/dev/upstream/internal/v1/batches/b-1/pipeline-state"),
]


@pytest.mark.parametrize(("method", "path"), DEV_ROUTES)
async def test_dev_routes_do_not_exist_outside_dev_mode(
    method: str, path: str, make_settings: SettingsFactory
) -> None:
    async with running_app(make_settings()) as app:
        response = await app.test_client().open(path, method=method, json={"user_id": "u"})
        assert response.status_code == 404
        assert not any(str(rule).startswith(("/dev", "/demo")) for rule in app.url_map.iter_rules())


async def test_static_client_is_served_and_not_in_the_openapi_document(
    make_settings: SettingsFactory,
) -> None:
    async with running_app(make_settings()) as app:
        response = await app.test_client().get("/static/gateway-client.js")
        assert response.status_code == 200
        assert "export class GatewayClient" in await response.get_data(as_text=True)
    paths = openapi_document()["paths"]
    assert "/v1/batches/{batch_id}/status" in paths
    assert not any(path.startswith(("/static", "/dev", "/demo")) for path in paths)


async def test_dev_token_and_stand_in_upstream_in_dev_mode(
    make_settings: SettingsFactory,
) -> None:
    async with running_app(make_settings(dev_mode=True)) as app:
        client = app.test_client()
        page = await client.get("/demo")
        assert page.status_code == 200
        assert "/static/demo.js" in await page.get_data(as_text=True)
        response = await client.post("/dev/token", json={"user_id": "demo-user"})
        claims = jwt.decode((await response.get_json())["token"], SECRET, algorithms=["HS256"])
        assert claims["sub"] == "demo-user"
        assert (await client.post("/dev/token", json={})).status_code == 400
        missing = await client.get("/dev/upstream/internal/v1/batches/nope/status")
        assert missing.status_code == 404
