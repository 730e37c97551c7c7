"""Fan-out ladders: publish at stepped rates until p99 exceeds the limit or events are lost.

1:1 fan-out: one connection per user, so every event reaches one connection. Group fan-out:
k connections per user, so every event reaches k connections.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from redis.exceptions import RedisError

from bench.context import Context
from bench.fleet import Fleet, layout
from bench.load import Mode
from bench.procinfo import cpu_seconds, own_cpu_seconds
from bench.servers import System, SystemServer
from bench.stats import summary
from publishers import PublishError

# The publisher offering less than this share of the asked rate means the generator, not the
# server, is the limit: the ladder stops and says so.
MIN_ACHIEVED_SHARE = 0.9


async def step(
    ctx: Context, server: SystemServer, fleet: Fleet, mode: Mode, rate: int, fan: Counter[str]
) -> dict[str, Any]:
    options = ctx.options
    seq_lo = ctx.loader.peek()
    gen_cpu = await fleet.reset(seq_lo)
    srv_cpu = cpu_seconds(server.pid)
    redis_cpu = cpu_seconds(ctx.redis.pid())
    own_cpu = own_cpu_seconds()
    started = time.monotonic()
    per_user, sent = await ctx.loader.run(mode, fleet.users, rate, options.step_seconds)
    publish_seconds = time.monotonic() - started
    srv_cpu = cpu_seconds(server.pid) - srv_cpu
    redis_cpu = cpu_seconds(ctx.redis.pid()) - redis_cpu
    own_cpu = own_cpu_seconds() - own_cpu
    await asyncio.sleep(options.drain_seconds)
    result = await fleet.collect(dict(per_user))
    gen_cpu = result.pop("cpu") - gen_cpu
    latencies = result.pop("latencies")
    expected = sum(count * fan[user] for user, count in per_user.items())
    lat = summary(latencies)
    load_core = (gen_cpu + own_cpu + redis_cpu) / publish_seconds
    ok = (
        lat["p99_ms"] <= options.p99_limit_ms
        and result["lost"] == 0
        and result["closed"] == 0
        and result["received"] > 0
    )
    return {
        "rate": rate,
        "achieved_rate": round(sent / publish_seconds, 1),
        "expected": expected,
        **result,
        **lat,
        "deliveries_per_s": round(result["received"] / publish_seconds, 1),
        "server_cpu_pct": round(100 * srv_cpu / publish_seconds, 1),
        "server_cpu_us_per_delivery": round(1e6 * srv_cpu / result["received"], 2)
        if result["received"]
        else None,
        "generator_cpu_pct": round(100 * gen_cpu / publish_seconds, 1),
        "publisher_cpu_pct": round(100 * own_cpu / publish_seconds, 1),
        "redis_cpu_pct": round(100 * redis_cpu / publish_seconds, 1),
        "load_core_pct": round(100 * load_core, 1),
        "ok": ok,
    }


def _latency_only_failure(result: dict[str, Any]) -> bool:
    return not result["ok"] and result["lost"] == 0 and result["closed"] == 0


async def ladder(
    ctx: Context, server: SystemServer, fleet: Fleet, mode: Mode, rates: list[int]
) -> dict[str, Any]:
    fan = Counter(fleet.conn_users)
    steps: list[dict[str, Any]] = []
    saturation = 0
    limited_by = "ladder top reached"
    for rate in rates:
        try:
            result = await step(ctx, server, fleet, mode, rate, fan)
            steps.append(result)
            if _latency_only_failure(result):
                # One repeat: a single pause (e.g. the heartbeat burst) must not end the ladder
                # on its own. Both attempts stay in the table.
                result["retried"] = True
                await asyncio.sleep(0.3)
                result = await step(ctx, server, fleet, mode, rate, fan)
                result["retry_of_failed_step"] = True
                steps.append(result)
        except (RedisError, PublishError, OSError, TimeoutError) as exc:
            limited_by = f"publishing failed at {rate}/s: {exc}"
            break
        if result["achieved_rate"] < MIN_ACHIEVED_SHARE * rate:
            limited_by = "generator (publisher could not offer the rate)"
            break
        if not result["ok"]:
            limited_by = "p99 > limit" if result["lost"] == 0 else "loss"
            if result["closed"]:
                limited_by = "connections closed"
            break
        saturation = rate
        await asyncio.sleep(0.3)
    return {"mode": mode, "steps": steps, "saturation_rate": saturation, "limited_by": limited_by}


async def run(
    ctx: Context,
    server: SystemServer,
    system: System,
    connections: int,
    users: int,
    rates: list[int],
) -> dict[str, Any]:
    ctx.redis.flush()
    conn_users = layout(connections, users, f"{system}-fan{connections}x{users}")
    fleet, opened = await Fleet.open(server.port, ctx.options.transport, conn_users)
    try:
        await asyncio.sleep(0.5)
        ladders = []
        fixed: list[dict[str, Any]] = []
        for mode in ctx.options.modes:
            ladders.append(await ladder(ctx, server, fleet, mode, rates))  # type: ignore[arg-type]
            if ctx.options.fixed_rate:
                # Equal load for every system, whatever its ladder reached.
                await asyncio.sleep(1.0)
                fan = Counter(fleet.conn_users)
                rate = ctx.options.fixed_rate * users // connections or 1
                result = await step(ctx, server, fleet, mode, rate, fan)  # type: ignore[arg-type]
                fixed.append({"mode": mode, **result})
    finally:
        await fleet.close()
    return {
        "connections": connections,
        "users": users,
        "connected": opened.connected,
        "errors": opened.errors,
        "retried": opened.retried,
        "ladders": ladders,
        "fixed": fixed,
    }
