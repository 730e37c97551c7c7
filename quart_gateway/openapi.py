"""Print the OpenAPI document without starting the server: `python -m quart_gateway.openapi`."""

from __future__ import annotations

import json
import sys
from typing import Any

from quart_gateway.app import create_app
from quart_gateway.settings import Secret, Settings


def openapi_document() -> dict[str, Any]:
    # Placeholder settings: building the app does no I/O and reads no secret.
    app = create_app(Settings(jwt_secret_key=Secret("unused-for-the-schema-only")))
    schema: dict[str, Any] = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    return schema


def main() -> None:
    json.dump(openapi_document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
