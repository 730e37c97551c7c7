"""Command-line options of `python -m bench`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

FULL_RATES = [250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 20000, 24000, 32000]
FULL_GROUP_RATES = [25, 50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1600, 2400]


@dataclass(frozen=True)
class Options:
    systems: tuple[str, ...]
    transport: Literal["ws", "sse"]
    idle_sizes: list[int]
    fanout_connections: int
    rates: list[int]
    group_connections: int
    group_users: int
    group_rates: list[int]
    modes: tuple[str, ...]
    step_seconds: float
    drain_seconds: float
    p99_limit_ms: float
    replay_events: int
    recovery_connections: int
    recovery_users: int
    restart_connections: list[int]
    restart_graces: list[float]
    restart_rate: float
    restart_start: Literal["sigterm", "close"]
    payload: Literal["class_updated", "batch_phase_concluded"]
    fixed_rate: int
    out: Path
    smoke: bool
    scenarios: tuple[str, ...]


ALL_SCENARIOS = ("idle", "fanout", "group", "replay", "recovery", "restart")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway against the origin per-connection-subscription design.",
    )
    parser.add_argument("--smoke", action="store_true", help="a few hundred connections, seconds")
    parser.add_argument(
        "--systems",
        default="gateway,baseline",
        help="gateway, baseline (origin design on Quart/Hypercorn), uvicorn (origin design on "
        "FastAPI/uvicorn, needs the `bench` extra), bare (a do-nothing ASGI app on Hypercorn: the "
        "memory floor, idle scenario only)",
    )
    parser.add_argument("--transport", choices=("ws", "sse"), default="ws")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    parser.add_argument("--idle-sizes", type=_ints, default=None, help="e.g. 1000,10000,20000")
    parser.add_argument("--fanout-connections", type=int, default=None)
    parser.add_argument("--rates", type=_ints, default=None, help="1:1 fan-out steps, events/s")
    parser.add_argument("--group-connections", type=int, default=None)
    parser.add_argument("--group-users", type=int, default=None)
    parser.add_argument("--group-rates", type=_ints, default=None, help="events/s to users")
    parser.add_argument("--modes", default="publish,publisher", help="publish and/or publisher")
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--replay-events", type=int, default=1000)
    parser.add_argument(
        "--restart-connections", type=_ints, default=None, help="streams held, e.g. 5000,15000"
    )
    parser.add_argument(
        "--restart-graces",
        type=lambda text: [float(p) for p in text.split(",") if p.strip()],
        default=None,
        help="SHUTDOWN_GRACE_SECONDS of the restarted worker, e.g. 10,25",
    )
    parser.add_argument("--restart-rate", type=float, default=None, help="events/s published")
    parser.add_argument(
        "--restart-start",
        choices=("sigterm", "close"),
        default="sigterm",
        help="start the gateway's replacement at the SIGTERM, or once the old listener closed",
    )
    parser.add_argument(
        "--payload",
        choices=("class_updated", "batch_phase_concluded"),
        default="class_updated",
        help="event published: class_updated (~105 B) or batch_phase_concluded (~220 B)",
    )
    parser.add_argument(
        "--fixed-rate",
        type=int,
        default=0,
        help="after the ladders, one more 1:1/group step at this rate on every system, "
        "whatever the ladder reached (server CPU per delivery at equal load)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/<time>")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke

    def pick(value: T | None, full: T, small: T) -> T:
        if value is not None:
            return value
        return small if smoke else full

    return Options(
        systems=tuple(s for s in args.systems.split(",") if s),
        transport=args.transport,
        idle_sizes=pick(args.idle_sizes, [1000, 10000, 20000], [300]),
        fanout_connections=pick(args.fanout_connections, 1000, 200),
        rates=pick(args.rates, FULL_RATES, [200, 400]),
        group_connections=pick(args.group_connections, 2000, 200),
        group_users=pick(args.group_users, 100, 10),
        group_rates=pick(args.group_rates, FULL_GROUP_RATES, [20, 40]),
        modes=tuple(m for m in args.modes.split(",") if m),
        step_seconds=pick(args.step_seconds, 4.0, 0.5),
        drain_seconds=0.25 if smoke else 1.0,
        p99_limit_ms=args.p99_limit_ms,
        replay_events=args.replay_events,
        recovery_connections=200 if smoke else 1000,
        recovery_users=20 if smoke else 100,
        restart_connections=pick(args.restart_connections, [5000, 15000], [200]),
        restart_graces=pick(args.restart_graces, [10.0], [3.0]),
        restart_rate=pick(args.restart_rate, 1000.0, 200.0),
        restart_start=args.restart_start,
        payload=args.payload,
        fixed_rate=args.fixed_rate,
        out=args.out,
        smoke=smoke,
        scenarios=tuple(s for s in args.scenarios.split(",") if s),
    )
