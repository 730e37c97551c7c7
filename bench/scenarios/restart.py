"""Restart under load: SIGTERM one worker holding N streams, start its replacement on the
same port, and measure how the clients come back.

N streams, 3/4 SSE and 1/4 WebSocket, over N/4 users (each user: 3 SSE + 1 WS), every
client resuming by id (`bench.resume`). `EventPublisher` publishes at a steady rate over the
users from before the SIGTERM until every client is back and a little after.

Old and new process bind the same port. The gateway creates its listening socket with
SO_REUSEPORT and closes it at the SIGTERM, so its replacement is started at the SIGTERM
(`--restart-start sigterm`, the default) and binds while the old process drains. The
baseline's Hypercorn sets SO_REUSEPORT only with more than one worker, so its replacement is
started once the old process's listener has left LISTEN (/proc/net/tcp, by socket inode), as
is the gateway's with `--restart-start close`. Between the old close and the new bind,
connections are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from array import array
from collections import Counter
from typing import Any

from bench.context import Context
from bench.fleet import Fleet, layout
from bench.procinfo import cpu_seconds, own_cpu_seconds, rss_kib
from bench.servers import System, SystemServer, listening
from bench.stats import summary

# Systems whose listening socket has SO_REUSEPORT: a replacement can bind beside them.
REUSEPORT_SYSTEMS = ("gateway",)

SAMPLE_SECONDS = 0.25
POST_SECONDS = 2.0  # keep publishing this long after every client is back
DRAIN_SECONDS = 1.5  # then wait for the last deliveries (and replays)


class Sampler:
    """CPU and RSS of the old and the new server process, every SAMPLE_SECONDS."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.load_pids: list[int] = []  # load generator shards and redis-server (core 1)
        self.peak_cpu_pct = 0.0
        self.peak_rss_kib: dict[int, int] = {}
        # (unix time, CPU % of both servers together, CPU % of the load core's processes)
        self.timeline: list[tuple[float, float, float]] = []

    async def run(self) -> None:
        last: dict[int, float] = {}
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            now = time.monotonic()
            used = [0.0, 0.0]
            for i, pids in enumerate((self.pids, [*self.load_pids, os.getpid()])):
                for pid in pids:
                    cpu = own_cpu_seconds() if pid == os.getpid() else cpu_seconds(pid)
                    if cpu:
                        used[i] += cpu - last.get(pid, cpu)
                        last[pid] = cpu
            for pid in self.pids:
                self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0), rss_kib(pid))
            pct, load = (round(100 * u / (now - last_t), 1) for u in used)
            last_t = now
            self.peak_cpu_pct = max(self.peak_cpu_pct, pct)
            self.timeline.append((time.time(), pct, load))


async def _publish(
    ctx: Context, users: list[str], rate: float, stop: asyncio.Event
) -> Counter[str]:
    per_user: Counter[str] = Counter()
    while not stop.is_set():
        part, _ = await ctx.loader.run("publisher", users, rate, 0.5)
        per_user.update(part)
    return per_user


def _merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": array("d"), "arrivals": array("d"), "replayed": array("b")}
    for key in ("latencies", "arrivals", "replayed"):
        for reply in replies:
            part = array(out[key].typecode)
            part.frombytes(reply[key])
            out[key].extend(part)
    for key in ("received", "lost", "duplicates", "out_of_order", "resyncs", "live_at_end"):
        out[key] = sum(r[key] for r in replies)
    out["attempts"] = sum(r["attempts"] for r in replies)
    out["back_at"] = [t for r in replies for t in r["back_at"]]
    errors: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for reply in replies:
        errors.update(reply["errors"])
        events.update(reply["events"])
    out["errors"], out["events"] = dict(errors), dict(events)
    return out


def _seconds(t: float | None, since: float) -> float | None:
    return None if t is None else round(t - since, 3)


async def run(
    ctx: Context, system: System, connections: int, grace: float, rate: float
) -> dict[str, Any]:
    options = ctx.options
    ctx.redis.flush()
    env = {"SHUTDOWN_GRACE_SECONDS": f"{grace:g}"}
    old = SystemServer(system, ctx.redis.url, ctx.log_dir, env=env, tag=f"-old-{connections}")
    await asyncio.to_thread(old.start)
    port, old_pid, new_pid = old.port, old.pid, 0
    new = SystemServer(
        system, ctx.redis.url, ctx.log_dir, port=port, env=env, tag=f"-new-{connections}"
    )
    n_ws = connections // 4
    users = max(1, connections // 4)
    prefix = f"{system}-restart{connections}g{grace:g}"
    sse_users = layout(connections - n_ws, users, prefix)
    ws_users = layout(n_ws, users, prefix) if n_ws else []
    fleets: list[Fleet] = []
    sampler = Sampler()
    sampler.pids = [old.pid]
    sampler_task = asyncio.create_task(sampler.run())
    stop = asyncio.Event()
    publisher: asyncio.Task[Counter[str]] | None = None
    try:
        opened = await asyncio.gather(
            Fleet.open(port, "sse", sse_users, resume=True),
            *([Fleet.open(port, "ws", ws_users, resume=True)] if ws_users else []),
        )
        fleets = [fleet for fleet, _ in opened]
        connected = sum(result.connected for _, result in opened)
        open_errors: Counter[str] = Counter()
        for _, result in opened:
            open_errors.update(result.errors)
        shards = [shard for fleet in fleets for shard in fleet.shards]
        sampler.load_pids = [ctx.redis.pid(), *(shard.pid for shard in shards)]
        all_users = sorted({*sse_users, *ws_users})
        await asyncio.sleep(0.5 if options.smoke else 1.0)

        seq_lo = ctx.loader.peek()
        await asyncio.gather(*(shard.ask("reset", seq_lo) for shard in shards))
        publisher = asyncio.create_task(_publish(ctx, all_users, rate, stop))
        await asyncio.sleep(1.0 if options.smoke else 3.0)

        sigterm_at = time.time()
        await asyncio.gather(*(shard.ask("mark", sigterm_at) for shard in shards))
        old.terminate()
        # The gateway's listening socket has SO_REUSEPORT: its replacement is started at the
        # SIGTERM, as a process manager would. The baseline's has not: its replacement can
        # only bind once the old process has closed its listener.
        early = system in REUSEPORT_SYSTEMS and options.restart_start == "sigterm"
        if early:
            new.launch()
            sampler.pids = [old_pid, new.pid]
        listener_closed_at: float | None = None
        new_listening_at: float | None = None
        deadline = time.monotonic() + grace + 40
        while time.monotonic() < deadline:  # polled: no event tells us
            now = time.time()
            if listener_closed_at is None and not listening(port, old_pid):
                listener_closed_at = now
                if not early:
                    new.launch()
                    sampler.pids = [old_pid, new.pid]
            if new.process is not None and new_listening_at is None and listening(port, new.pid):
                new_listening_at = now
            if listener_closed_at is not None and new_listening_at is not None:
                break
            if new.process is not None and new.process.poll() is not None:
                raise RuntimeError(f"replacement exited with {new.process.returncode}")
            await asyncio.sleep(0.02)
        if new.process is None:
            new.launch()
        await asyncio.to_thread(new.wait_ready)
        new_pid = new.pid
        sampler.pids = [old_pid, new_pid]
        all_back_at: float | None = None
        give_up = time.monotonic() + 60 + 2 * grace
        while time.monotonic() < give_up:
            progress = await asyncio.gather(*(shard.ask("progress") for shard in shards))
            if sum(p["back"] for p in progress) >= connected:
                all_back_at = time.time()
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(POST_SECONDS)
        stop.set()
        per_user = await publisher
        publisher = None
        await asyncio.sleep(DRAIN_SECONDS)
        fan = Counter(sse_users) + Counter(ws_users)
        expected = dict(per_user)
        data = _merge(await asyncio.gather(*(s.ask("collect", expected) for s in shards)))
        old_exit = old.process.poll() if old.process is not None else None
    finally:
        stop.set()
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher
        for fleet in fleets:
            await fleet.close()
        sampler_task.cancel()
        await asyncio.to_thread(old.stop, grace + 5)
        await asyncio.to_thread(new.stop)

    back = sorted(t - sigterm_at for t in data["back_at"] if t)
    storm_end = (all_back_at or time.time()) + 1.0
    storm = [
        lat
        for lat, t in zip(data["latencies"], data["arrivals"], strict=True)
        if sigterm_at <= t <= storm_end
    ]
    live_storm = [
        lat
        for lat, t, rep in zip(data["latencies"], data["arrivals"], data["replayed"], strict=True)
        if sigterm_at <= t <= storm_end and not rep
    ]
    errors: dict[str, int] = data["errors"]
    in_storm = [(cpu, load) for t, cpu, load in sampler.timeline if sigterm_at <= t <= storm_end]
    published = sum(per_user.values())
    return {
        "system": system,
        "connections": connections,
        "sse": connections - n_ws,
        "ws": n_ws,
        "users": users,
        "grace_s": grace,
        "rate": rate,
        "replacement_started": "at SIGTERM" if early else "after the old listener closed",
        "connected": connected,
        "open_errors": dict(open_errors),
        "published": published,
        "expected": sum(count * fan[user] for user, count in per_user.items()),
        "received": data["received"],
        "lost": data["lost"],
        "duplicates": data["duplicates"],
        "out_of_order": data["out_of_order"],
        "resyncs": data["resyncs"],
        "listener_closed_s": _seconds(listener_closed_at, sigterm_at),
        "new_listening_s": _seconds(new_listening_at, sigterm_at),
        "all_back_s": _seconds(all_back_at, sigterm_at),
        "back": len(back),
        "back_p50_s": round(back[len(back) // 2], 3) if back else None,
        "back_max_s": round(back[-1], 3) if back else None,
        "live_at_end": data["live_at_end"],
        "storm": summary(storm),
        "storm_live": summary(live_storm),
        "steady": summary(
            [
                lat
                for lat, t in zip(data["latencies"], data["arrivals"], strict=True)
                if t < sigterm_at
            ]
        ),
        "attempts": data["attempts"],
        "errors": errors,
        "events": data["events"],
        "http_5xx": sum(v for k, v in errors.items() if k.startswith("5xx")),
        "connect_refused": errors.get("connect refused", 0),
        "refused_overloaded": errors.get("refused: overloaded", 0),
        "refused_restart": errors.get("refused: server_restart", 0),
        "timeouts": errors.get("timeout", 0),
        "peak_cpu_pct": round(sampler.peak_cpu_pct, 1),
        "mean_cpu_pct_storm": round(sum(c for c, _ in in_storm) / len(in_storm), 1)
        if in_storm
        else None,
        "mean_load_core_pct_storm": round(sum(x for _, x in in_storm) / len(in_storm), 1)
        if in_storm
        else None,
        "peak_rss_mib_old": round(sampler.peak_rss_kib.get(old_pid, 0) / 1024, 1),
        "peak_rss_mib_new": round(sampler.peak_rss_kib.get(new_pid, 0) / 1024, 1),
        "old_exit": old_exit,
        "cpu_timeline": [(round(t - sigterm_at, 2), c, x) for t, c, x in sampler.timeline],
    }
