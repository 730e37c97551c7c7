"""Redis restart: kill -9 redis-server, start it again on the same port, and time until a
published event reaches the connected clients again (probes are published every 50 ms)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from redis.exceptions import RedisError

from bench.context import Context
from bench.fleet import Fleet, layout
from bench.servers import System, SystemServer

DOWN_SECONDS = 1.0
PROBE_INTERVAL = 0.05
GIVE_UP_SECONDS = 30.0


async def run(ctx: Context, server: SystemServer, system: System) -> dict[str, Any]:
    options = ctx.options
    conn_users = layout(options.recovery_connections, options.recovery_users, f"{system}-recovery")
    fleet, opened = await Fleet.open(server.port, options.transport, conn_users)
    try:
        await asyncio.sleep(0.5)
        ctx.redis.kill9()
        await asyncio.sleep(DOWN_SECONDS)
        ctx.redis.start()
        restarted = time.time()
        await fleet.ask_all("watch", ctx.loader.peek())
        progress: list[dict[str, Any]] = []
        probe_errors = 0
        while time.time() - restarted < GIVE_UP_SECONDS:
            try:
                await ctx.loader.probe(fleet.users)
            except (RedisError, OSError):
                probe_errors += 1
            await asyncio.sleep(PROBE_INTERVAL)
            progress = await fleet.ask_all("progress")
            if sum(p["reached"] for p in progress) >= sum(p["open"] for p in progress):
                break
    finally:
        await fleet.close()
    arrivals = sorted(t - restarted for p in progress for t in p["arrivals"])
    still_open = sum(p["open"] for p in progress)
    return {
        "connections": options.recovery_connections,
        "connected": opened.connected,
        "still_open": still_open,
        "closed": sum(p["closed"] for p in progress),
        "reached": len(arrivals),
        "resyncs": sum(p["resyncs"] for p in progress),
        "first_ms": round(1000 * arrivals[0], 1) if arrivals else None,
        "median_ms": round(1000 * statistics.median(arrivals), 1) if arrivals else None,
        "all_open_ms": round(1000 * arrivals[-1], 1)
        if arrivals and len(arrivals) == still_open
        else None,
        "probe_errors": probe_errors,
    }
