"""JSON Schema export for every event type (input for generated TypeScript types)."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import TypeAdapter

from events.catalog import AnyEvent


def json_schemas() -> dict[str, Any]:
    """One JSON Schema document: a union discriminated on `event`, models under `$defs`."""
    schema: dict[str, Any] = TypeAdapter(AnyEvent).json_schema(mode="serialization")
    schema["title"] = "GatewayEvent"
    return schema


def main() -> None:
    json.dump(json_schemas(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
