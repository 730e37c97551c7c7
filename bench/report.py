"""Headline numbers, ratios against the baseline, targets, and the Markdown report."""

from __future__ import annotations

from typing import Any

from bench.stats import ratio

Row = tuple[str, Any, Any, Any, str, str]


def _idle_best(results: dict[str, Any], system: str) -> dict[str, Any] | None:
    """The largest idle size the system reached (or its largest attempt)."""
    runs = results.get("idle", {}).get(system, [])
    reached = [r for r in runs if r["reached"]] or runs
    return max(reached, key=lambda r: r["connected"]) if reached else None


def _saturation(results: dict[str, Any], key: str, system: str, mode: str) -> int | None:
    for ladder in results.get(key, {}).get(system, {}).get("ladders", []):
        if ladder["mode"] == mode:
            return int(ladder["saturation_rate"])
    return None


def _unsaturated(results: dict[str, Any], key: str, mode: str) -> str | None:
    """Why a ladder of either system ended without finding the server's limit, if it did."""
    for data in results.get(key, {}).values():
        for ladder in data.get("ladders", []):
            if ladder["mode"] != mode:
                continue
            if ladder["limited_by"].startswith("generator"):
                return "generator-limited"
            if ladder["limited_by"] == "ladder top reached":
                return "ladder top reached"
    return None


def headline(results: dict[str, Any]) -> dict[str, Any]:
    g_idle = _idle_best(results, "gateway")
    b_idle = _idle_best(results, "baseline")
    runs = results.get("idle", {}).get("gateway", [])
    max_live = max((r["connected"] for r in runs), default=None)
    b_runs = results.get("idle", {}).get("baseline", [])
    b_max_live = max((r["connected"] for r in b_runs), default=None)
    redis_conns = max((r["redis_clients"] for r in runs), default=None)
    out: dict[str, Any] = {
        "gateway_max_live": max_live,
        "baseline_max_live": b_max_live,
        "gateway_rss_per_conn_kib": g_idle and g_idle["rss_per_conn_kib"],
        "baseline_rss_per_conn_kib": b_idle and b_idle["rss_per_conn_kib"],
        "gateway_cpu_ms_per_setup": g_idle and g_idle["cpu_ms_per_setup"],
        "baseline_cpu_ms_per_setup": b_idle and b_idle["cpu_ms_per_setup"],
        "gateway_redis_conns": redis_conns,
        "baseline_redis_conns": max(
            (r["redis_clients"] for r in results.get("idle", {}).get("baseline", [])), default=None
        ),
    }
    for key in ("fanout", "group"):
        for mode in ("publish", "publisher"):
            g = _saturation(results, key, "gateway", mode)
            b = _saturation(results, key, "baseline", mode)
            u = _saturation(results, key, "uvicorn", mode)
            out[f"{key}_{mode}"] = {
                "gateway": g,
                "baseline": b,
                "ratio": ratio(g, b),
                "uvicorn": u,
                "ratio_uvicorn": ratio(g, u),
                "unsaturated": _unsaturated(results, key, mode),
            }
    replay = results.get("replay", {}).get("gateway")
    out["replay_ms"] = replay and replay["median_total_ms"]
    out["replay_complete"] = replay and replay["complete"]
    for system in ("gateway", "baseline"):
        rec = results.get("recovery", {}).get(system)
        out[f"recovery_{system}"] = rec
    return out


def targets(h: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, gateway's value, met?) for each target; None when not measured."""

    def check(value: Any, limit: float, most: bool) -> bool | None:
        if value is None:
            return None
        return bool(value <= limit) if most else bool(value >= limit)

    specs: list[tuple[str, Any, float, bool]] = [
        ("live connections >= 18,000", h["gateway_max_live"], 18000, False),
        ("RSS per idle connection <= 25 KiB", h["gateway_rss_per_conn_kib"], 25, True),
        ("CPU per connection set-up <= 1 ms", h["gateway_cpu_ms_per_setup"], 1.0, True),
        ("Redis connections per worker <= 2", h["gateway_redis_conns"], 2, True),
        ("1:1 saturation >= 1.5x baseline (PUBLISH)", h["fanout_publish"]["ratio"], 1.5, False),
        (
            "1:1 saturation >= 1.5x baseline (EventPublisher)",
            h["fanout_publisher"]["ratio"],
            1.5,
            False,
        ),
        ("group saturation >= 2x baseline (PUBLISH)", h["group_publish"]["ratio"], 2.0, False),
        (
            "group saturation >= 2x baseline (EventPublisher)",
            h["group_publisher"]["ratio"],
            2.0,
            False,
        ),
    ]
    rows = [(name, str(value), check(value, limit, most)) for name, value, limit, most in specs]
    ladders = [("fanout", "publish"), ("fanout", "publisher"), ("group", "publish")]
    ladders.append(("group", "publisher"))
    for i, (key, mode) in enumerate(ladders):
        why = h[f"{key}_{mode}"]["unsaturated"]
        if why:
            name, value, _ = rows[4 + i]
            rows[4 + i] = (name, f"{value} ({why}: not a saturation ratio)", None)
    replay_ok = None
    if h["replay_ms"] is not None:
        replay_ok = h["replay_ms"] < 100 and bool(h["replay_complete"])
    rows.append(("replay of 1,000 missed events < 100 ms", str(h["replay_ms"]), replay_ok))
    return rows


def _verdict(step: dict[str, Any]) -> str:
    verdict = "ok" if step["ok"] else "FAIL"
    return verdict + (" (repeat)" if step.get("retry_of_failed_step") else "")


def _mark(ok: bool | None) -> str:
    return "inconclusive" if ok is None else ("met" if ok else "MISSED")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    h = headline(results)
    m = results["machine"]
    out = [
        f"# Benchmark results ({results['started']})",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Python "
        f"{m['python']}, {m['redis']}; load average at start {' '.join(m['loadavg'])}; "
        f"RLIMIT_NOFILE {m['nofile_limit']}. Transport: {results['options']['transport']}. "
        "Servers pinned to core 0; load generator, publisher and redis-server to core 1.",
        "",
        "## Targets",
        "",
        *(
            ["Smoke run: sizes far below the targets' scale; informative only.", ""]
            if results["options"].get("smoke")
            else []
        ),
        *_table(["target", "gateway", "result"], [[n, v, _mark(ok)] for n, v, ok in targets(h)]),
        "",
        "## Idle connections",
        "",
    ]
    rows = []
    for system, runs in results.get("idle", {}).items():
        for r in runs:
            rows.append([system, r["size"], r["connected"], r["rss_per_conn_kib"],
                         r["cpu_ms_per_setup"], r["redis_clients"], r["setup_seconds"],
                         r["idle_cpu_pct"], r["baseline_rss_kib"], r["idle_rss_kib"],
                         "; ".join(f"{k} x{v}" for k, v in r["errors"].items())])  # fmt: skip
    out += _table(
        ["system", "wanted", "connected", "RSS/conn KiB", "CPU ms/set-up", "Redis conns",
         "set-up s", "idle CPU %", "RSS before KiB", "RSS idle KiB", "errors"], rows,
    )  # fmt: skip
    for key, title in (("fanout", "1:1 fan-out"), ("group", "Group fan-out")):
        out += ["", f"## {title}", ""]
        rows = []
        for system, data in results.get(key, {}).items():
            out.append(f"- {system}: {data['connected']}/{data['connections']} connections over "
                       f"{data['users']} users")  # fmt: skip
            for ladder in data["ladders"]:
                for s in ladder["steps"]:
                    rows.append([system, ladder["mode"], s["rate"], s["achieved_rate"],
                                 s["deliveries_per_s"], s["p50_ms"], s["p90_ms"], s["p99_ms"],
                                 s["max_ms"], s["lost"], s["duplicates"], s["out_of_order"],
                                 s["closed"], s["server_cpu_pct"], s["generator_cpu_pct"],
                                 s["publisher_cpu_pct"], s["redis_cpu_pct"], s["load_core_pct"],
                                 _verdict(s)])  # fmt: skip
        out += [
            "",
            *_table(
            ["system", "mode", "rate/s", "achieved/s", "deliveries/s", "p50 ms", "p90 ms",
             "p99 ms", "max ms", "lost", "dup", "ooo", "closed", "server CPU %", "gen CPU %",
             "pub CPU %", "redis CPU %", "core 1 %", "step"], rows,
            ),
        ]  # fmt: skip
        out += [""]
        for mode in ("publish", "publisher"):
            sat = h[f"{key}_{mode}"]
            if sat["gateway"] is None and sat["baseline"] is None:
                continue
            out.append(f"- saturation ({mode}): gateway {sat['gateway']}/s, baseline "
                       f"{sat['baseline']}/s, ratio {sat['ratio']}")  # fmt: skip
            if sat.get("uvicorn") is not None:
                out.append(f"- saturation ({mode}): uvicorn origin {sat['uvicorn']}/s, "
                           f"gateway/uvicorn {sat['ratio_uvicorn']}")  # fmt: skip
        fixed_rows = [
            [system, f["mode"], f["rate"], f["achieved_rate"], f["deliveries_per_s"],
             f["p50_ms"], f["p99_ms"], f["lost"], f["server_cpu_pct"],
             f["server_cpu_us_per_delivery"], f["load_core_pct"]]
            for system, data in results.get(key, {}).items()
            for f in data.get("fixed", [])
        ]  # fmt: skip
        if fixed_rows:
            out += ["", f"Fixed rate, every system ({title}):", ""]
            out += _table(
                ["system", "mode", "rate/s", "achieved/s", "deliveries/s", "p50 ms", "p99 ms",
                 "lost", "server CPU %", "server CPU µs/delivery", "core 1 %"], fixed_rows,
            )  # fmt: skip
            out.append("")
        for system, data in results.get(key, {}).items():
            for ladder in data["ladders"]:
                out.append(f"- {system} {ladder['mode']}: stopped by {ladder['limited_by']}")
    replay = results.get("replay", {}).get("gateway")
    if replay:
        out += ["", "## Replay on reconnect (gateway)", ""]
        out += _table(
            ["run", "received", "lost", "dup", "ooo", "resyncs", "total ms", "after connected ms"],
            [[i + 1, r["received"], r["lost"], r["duplicates"], r["out_of_order"], r["resyncs"],
              r["total_ms"], r["after_connected_ms"]] for i, r in enumerate(replay["runs"])],
        )  # fmt: skip
        median, missed = replay["median_total_ms"], replay["missed_events"]
        out.append(f"\nMedian: {median} ms for {missed} events.")
    if results.get("recovery"):
        out += ["", "## Recovery after a Redis restart (kill -9, restart on the same port)", ""]
        rows = [[system, r["connected"], r["still_open"], r["closed"], r["reached"],
                 r["resyncs"], r["first_ms"], r["median_ms"], r["all_open_ms"]]
                for system, r in results["recovery"].items()]  # fmt: skip
        out += _table(
            ["system", "connected", "still open", "closed", "got a probe", "resyncs",
             "first ms", "median ms", "all open ms"], rows,
        )  # fmt: skip
        out.append("\nTimes run from the moment the restarted redis-server answers PING.")
    if results.get("restart"):
        out += ["", "## Restart (SIGTERM, replacement on the same port)", ""]
        rows = []
        for system, runs in results["restart"].items():
            for r in runs:
                rows.append([system, r["connections"], r["grace_s"], r["connected"],
                             r["listener_closed_s"], r["new_listening_s"], r["all_back_s"],
                             r["back_p50_s"], r["expected"], r["lost"], r["duplicates"],
                             r["out_of_order"], r["resyncs"], r["storm"]["p99_ms"],
                             r["storm_live"]["p99_ms"], r["http_5xx"], r["connect_refused"],
                             r["refused_restart"], r["refused_overloaded"], r["timeouts"],
                             r["peak_cpu_pct"], r.get("mean_cpu_pct_storm"),
                             r.get("mean_load_core_pct_storm"), r["peak_rss_mib_old"],
                             r["peak_rss_mib_new"]])  # fmt: skip
        out += _table(
            ["system", "streams", "grace s", "connected", "old listener closed s",
             "new listening s", "all back s", "median back s", "expected", "lost", "dup", "ooo",
             "resyncs", "storm p99 ms", "storm p99 live ms", "5xx", "connect refused",
             "refused: restart", "refused: overloaded", "timeouts", "peak CPU %",
             "mean CPU % storm", "core 1 % storm",
             "peak RSS old MiB", "peak RSS new MiB"], rows,
        )  # fmt: skip
        out.append(
            "\nTimes from the SIGTERM. Streams: 3/4 SSE, 1/4 WebSocket, over streams/4 users; "
            "EventPublisher publishing throughout. 'storm p99' covers every delivery from the "
            "SIGTERM until 1 s after the last client was back, replayed ones included; 'live' "
            "leaves out events sent before the stream that delivered them was connected."
        )
    if results.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(out) + "\n"
