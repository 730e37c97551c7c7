"""Idle connections: memory per connection, CPU per connection set-up, Redis connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.context import Context
from bench.fleet import Fleet, layout
from bench.procinfo import cpu_seconds, rss_kib
from bench.servers import System


async def run(ctx: Context, system: System, size: int) -> dict[str, Any]:
    settle = 0.3 if ctx.options.smoke else 1.5
    idle_wait = 0.5 if ctx.options.smoke else 3.0
    ctx.redis.flush()
    server = ctx.server(system)
    pid = server.pid
    try:
        await asyncio.sleep(settle)
        base_rss = rss_kib(pid)
        base_cpu = cpu_seconds(pid)
        base_redis = ctx.redis.server_clients()
        conn_users = layout(size, size, f"idle{size}")
        fleet, opened = await Fleet.open(server.port, ctx.options.transport, conn_users)
        setup_cpu = cpu_seconds(pid) - base_cpu
        try:
            await asyncio.sleep(idle_wait)
            cpu_before = cpu_seconds(pid)
            started = time.monotonic()
            await asyncio.sleep(idle_wait)
            idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
            rss = rss_kib(pid)
            redis_clients = ctx.redis.server_clients()
            generator_rss = sum(rss_kib(shard.pid) for shard in fleet.shards)
            alive = server.process is not None and server.process.poll() is None
        finally:
            await fleet.close()
    finally:
        server.stop()
    connected = opened.connected
    return {
        "size": size,
        "connected": connected,
        "reached": connected == size,
        "errors": opened.errors,
        "retried": opened.retried,
        "setup_seconds": round(opened.seconds, 2),
        "baseline_rss_kib": base_rss,
        "idle_rss_kib": rss,
        "rss_per_conn_kib": round((rss - base_rss) / connected, 2) if connected else None,
        "cpu_ms_per_setup": round(1000 * setup_cpu / connected, 3) if connected else None,
        "idle_cpu_pct": round(100 * idle_cpu, 1),
        "redis_clients_idle": base_redis,
        "redis_clients": redis_clients,
        "generator_rss_kib_per_conn": round(generator_rss / connected, 2) if connected else None,
        "server_alive": alive,
    }
