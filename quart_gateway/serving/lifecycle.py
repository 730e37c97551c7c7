"""Draining: what happens between SIGTERM and the server closing its sockets.

`start_draining(spread)` refuses new streams at once (and `/readyz` turns 503), then ends every
open one with SHUTDOWN (WebSocket 1012; SSE a farewell event), each at a random moment within
`spread` seconds and each with a jittered reconnect delay: a worker's clients come back spread
over the window instead of all in the same second. `wait_drained()` returns once they have
gone, or when the grace period runs out; the entry point then lets Hypercorn stop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import suppress
from typing import Protocol

from quart_gateway.live import disconnect
from quart_gateway.live.subscriber import Subscriber

logger = logging.getLogger(__name__)


class Connections(Protocol):
    """Where the open streams are registered (the multiplexer)."""

    def subscribers(self) -> list[Subscriber]: ...


class Lifecycle:
    def __init__(self) -> None:
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = 0
        self._mux: Connections | None = None

    def attach(self, mux: Connections) -> None:
        self._mux = mux

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def stream_opened(self) -> None:
        self._open += 1
        self._idle.clear()

    def stream_closed(self) -> None:
        self._open -= 1
        if self._open <= 0:
            self._open = 0
            self._idle.set()

    def start_draining(self, spread: float = 0.0) -> None:
        """Refuse new streams and end the open ones, spread over `spread` seconds. Called
        again with no spread (the lifespan's teardown), it ends what is still open at once."""
        first = not self._draining.is_set()
        self._draining.set()
        if self._mux is None:
            return
        subscribers = self._mux.subscribers()
        if first:
            logger.info("draining: closing %d open streams over %.1fs", len(subscribers), spread)
        if spread <= 0:
            for sub in subscribers:
                sub.close(disconnect.SHUTDOWN)
            return
        if first:
            loop = asyncio.get_running_loop()
            for sub in subscribers:
                loop.call_later(random.uniform(0, spread), sub.close, disconnect.SHUTDOWN)

    async def wait_drained(self, timeout: float) -> bool:
        """True if every stream ended within `timeout` seconds."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
                return True
        logger.warning("drain timed out with %d streams still open", self._open)
        return False
