"""The heartbeat: a `ping` for every live connection once per interval.

The pings are spread over the interval: each of HEARTBEAT_SLOTS ticks pings one slot of
connections (a connection's slot is its sequence number modulo the slot count), with one frame
encoded for all of them. Pinging every connection at the same instant stalls the worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from quart_gateway.live.messages import ping_frame
from quart_gateway.live.multiplexer import LiveChannels
from quart_gateway.ops.metrics import Metrics

logger = logging.getLogger(__name__)

# At 15,000 connections, 8 slots meant about 1,900 pings per tick and a pause of roughly
# 150 ms for every stream of the worker; 32 slots keep a tick near 500 at that size.
HEARTBEAT_SLOTS = 32


async def run_heartbeat(mux: LiveChannels, interval: float, metrics: Metrics) -> None:
    """Ping one slot of `mux`'s connections every `interval / HEARTBEAT_SLOTS` seconds, until
    cancelled. The caller owns the task (the lifespan)."""
    for tick in itertools.count():
        await asyncio.sleep(interval / HEARTBEAT_SLOTS)
        try:
            mux.broadcast(ping_frame(), slot=tick % HEARTBEAT_SLOTS, slots=HEARTBEAT_SLOTS)
        except Exception:  # a task root: without pings every client would reconnect
            metrics.task_failures.labels(task="heartbeat").inc()
            logger.exception("heartbeat failed; continuing")
