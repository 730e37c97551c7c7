"""Draining: what happens between SIGTERM and the server closing its sockets.

`start_draining()` refuses new streams and asks every open one to end with SHUTDOWN (WebSocket
1012; SSE a farewell event and a jittered `retry:`). `wait_drained()` returns once they have
gone, or when the grace period runs out; the entry point then lets Hypercorn stop.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from quart_gateway.live import disconnect
from quart_gateway.live.multiplexer import Multiplexer

logger = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self) -> None:
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = 0
        self._mux: Multiplexer | None = None

    def attach(self, mux: Multiplexer) -> None:
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

    def start_draining(self) -> None:
        if self._draining.is_set():
            return
        self._draining.set()
        logger.info("draining: closing %d open streams", self._open)
        if self._mux is not None:
            self._mux.close_all(disconnect.SHUTDOWN)

    async def wait_drained(self, timeout: float) -> bool:
        """True if every stream ended within `timeout` seconds."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
                return True
        logger.warning("drain timed out with %d streams still open", self._open)
        return False
