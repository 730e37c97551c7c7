"""Realtime client gateway: hydrate over REST, live updates over WebSocket and SSE."""

from __future__ import annotations

from quart_gateway.app import create_app

__all__ = ["create_app"]
