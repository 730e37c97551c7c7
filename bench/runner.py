"""Runs the selected scenarios on both systems in one invocation and writes the results."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import plot, report
from bench.context import Context
from bench.load import Loader
from bench.options import Options
from bench.procinfo import machine, pin_self, raise_nofile
from bench.scenarios import fanout, idle, recovery, replay, restart
from bench.servers import LOAD_CORE, RedisServer, System

logger = logging.getLogger("bench")


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _live_scenarios(ctx: Context, system: System, results: dict[str, Any]) -> None:
    o = ctx.options
    server = ctx.server(system)
    try:
        if "fanout" in o.scenarios:
            _say(f"{system}: 1:1 fan-out, {o.fanout_connections} connections")
            results.setdefault("fanout", {})[system] = await fanout.run(
                ctx, server, system, o.fanout_connections, o.fanout_connections, o.rates
            )
        if "group" in o.scenarios:
            _say(f"{system}: group fan-out, {o.group_connections} over {o.group_users} users")
            results.setdefault("group", {})[system] = await fanout.run(
                ctx, server, system, o.group_connections, o.group_users, o.group_rates
            )
        if "replay" in o.scenarios and system == "gateway":
            _say(f"{system}: replay of {o.replay_events} missed events")
            results.setdefault("replay", {})[system] = await replay.run(ctx, server)
        if "recovery" in o.scenarios:
            _say(f"{system}: recovery after a Redis restart")
            results.setdefault("recovery", {})[system] = await recovery.run(ctx, server, system)
            await ctx.loader.reconnect()
    finally:
        server.stop()


async def run(options: Options) -> Path:
    pin_self(LOAD_CORE)
    raise_nofile()
    out = options.out or Path("bench/results") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    log_dir.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "notes": [],
    }
    redis_server = RedisServer(log_dir)
    redis_server.start()
    ctx = Context(options, redis_server, Loader(redis_server.url, options.payload), log_dir)
    systems: list[System] = [
        s for s in ("gateway", "baseline", "uvicorn", "bare") if s in options.systems
    ]
    try:
        if "idle" in options.scenarios:
            for size in options.idle_sizes:
                for system in systems:
                    _say(f"{system}: {size} idle connections")
                    entry = await idle.run(ctx, system, size)
                    results.setdefault("idle", {}).setdefault(system, []).append(entry)
                    _say(f"  connected {entry['connected']}, {entry['rss_per_conn_kib']} KiB/conn")
        # `bare` serves no events: it is only the memory floor of the idle scenario.
        live = [s for s in systems if s != "bare"]
        for system in live:
            await _live_scenarios(ctx, system, results)
        if "restart" in options.scenarios:
            for size in options.restart_connections:
                for grace in options.restart_graces:
                    for system in live:
                        _say(f"{system}: restart with {size} streams, grace {grace:g} s")
                        entry = await restart.run(ctx, system, size, grace, options.restart_rate)
                        results.setdefault("restart", {}).setdefault(system, []).append(entry)
                        _say(f"  back after {entry['all_back_s']} s, lost {entry['lost']}")
    finally:
        await ctx.loader.aclose()
        redis_server.stop()
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["headline"] = report.headline(results) if "idle" in results else None
        skipped = plot.plot(results, out / "p99_vs_rate.png")
        if skipped:
            results["notes"].append(skipped)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "results.md").write_text(report.markdown(results))
    _say(f"results in {out}")
    return out


def main(options: Options) -> int:
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(options))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(options))
    return 0
