"""`GET /metrics` for a process group: whichever worker answers, it reports all of them.

Each worker of `python -m quart_gateway` (WEB_CONCURRENCY > 1) writes a snapshot of its own
registry into the group's directory every SNAPSHOT_INTERVAL seconds, and again just before it
answers a scrape. The answering worker merges its fresh snapshot with its peers' files:

- counters (and histograms, summaries) are summed over every worker, the ones that died
  included, so that they never go down while the group runs;
- gauges are reported per worker, with a `worker="<pid>"` label.

When a worker dies, the supervisor retires it (`retire()`): its counters are folded into
`retired.json` and its snapshot removed, so its gauges disappear and its totals stay. See
docs/discussion/metrics-across-workers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from quart import Quart

from quart_gateway.services import EXTENSION_KEY as SERVICES_KEY
from quart_gateway.services import Services

logger = logging.getLogger(__name__)

EXTENSION_KEY = "metrics-group"
SNAPSHOT_INTERVAL = 1.0  # the staleness of a peer's numbers in a scrape, at most
RETIRED = "retired.json"
SUMMED = frozenset({"counter", "histogram", "summary"})
AGE = "gateway_metrics_snapshot_age_seconds"

# A snapshot, as written to disk:
#   {"worker": "<pid>", "written": <unix time>,
#    "families": [{"name", "type", "help", "samples": [[sample name, {labels}, value]]}]}
# retired.json has the same "families" (summed types only) and "members": the retired names.
Snapshot = dict[str, Any]
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class GroupMember:
    """Where a worker's group writes its snapshots, and this worker's name there (unique within
    the group, never reused: a pid may be)."""

    directory: str
    name: str


def snapshot(registry: CollectorRegistry, worker: str) -> Snapshot:
    families = [
        {
            "name": metric.name,
            "type": metric.type,
            "help": metric.documentation,
            "samples": [[s.name, s.labels, s.value] for s in metric.samples],
        }
        for metric in registry.collect()
    ]
    return {"worker": worker, "written": time.time(), "families": families}


def _write(directory: Path, name: str, data: Snapshot) -> None:
    # Readers see the old file or the new one, never a partial one.
    temporary = directory / f".{name}.tmp"
    temporary.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(temporary, directory / f"{name}.json")


def _read(path: Path) -> Snapshot | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # retired meanwhile: retired.json, read after it, has its counters
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a snapshot")
    return data


class _Family:
    def __init__(self, name: str, kind: str, documentation: str) -> None:
        self.name = name
        self.kind = kind
        self.documentation = documentation
        self.samples: dict[SampleKey, float] = {}

    def add(self, sample: str, labels: dict[str, str], value: float) -> None:
        key = (sample, tuple(sorted(labels.items())))
        if key not in self.samples:
            self.samples[key] = value
        elif sample.endswith("_created"):
            self.samples[key] = min(self.samples[key], value)  # the oldest contributor
        else:
            self.samples[key] += value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "help": self.documentation,
            "samples": [[s, dict(labels), v] for (s, labels), v in self.samples.items()],
        }

    def to_metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, self.kind)
        for (sample, labels), value in self.samples.items():
            metric.add_sample(sample, dict(labels), value)
        return metric


class _Merge:
    """Families in first-seen order: summed types summed, the others labelled per worker."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def family(self, raw: dict[str, Any]) -> _Family:
        name = raw["name"]
        if name not in self.families:
            self.families[name] = _Family(name, raw["type"], raw["help"])
        return self.families[name]

    def add(self, families: Iterable[dict[str, Any]], worker: str | None) -> None:
        for raw in families:
            family = self.family(raw)
            summed = raw["type"] in SUMMED
            if worker is None and not summed:
                continue  # a retired worker's gauges went with it
            for sample, labels, value in raw["samples"]:
                if not summed:
                    labels = {**labels, "worker": worker}
                family.add(sample, labels, float(value))


def merge(live: list[Snapshot], retired: Snapshot | None, now: float) -> list[Metric]:
    """The group's families: `live` workers (the answering one first) and the retired ones."""
    merged = _Merge()
    retired_members = set(retired.get("members", ())) if retired else set()
    ages = _Family(AGE, "gauge", "Age of each worker's metrics in this scrape")
    for data in live:
        if data.get("member") in retired_members:
            continue  # read just before it was retired: counted once, in retired.json
        merged.add(data["families"], str(data["worker"]))
        ages.add(AGE, {"worker": str(data["worker"])}, max(0.0, now - data["written"]))
    if retired is not None:
        merged.add(retired.get("families", ()), None)
    return [*(f.to_metric() for f in merged.families.values()), ages.to_metric()]


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class GroupMetrics:
    """One worker's side: publish its snapshot, and render the whole group's."""

    def __init__(self, member: GroupMember, registry: CollectorRegistry) -> None:
        self.member = member
        self.directory = Path(member.directory)
        self.registry = registry
        self.worker = str(os.getpid())
        self._failing = False

    def own(self) -> Snapshot:
        data = snapshot(self.registry, self.worker)
        data["member"] = self.member.name
        return data

    def publish(self) -> Snapshot:
        data = self.own()
        _write(self.directory, self.member.name, data)
        return data

    def render(self) -> bytes:
        # Written first: whatever this scrape reports of this worker is then on disk, so a
        # later scrape answered by a peer (or after this worker died) never reports less.
        try:
            own = self.publish()
        except OSError as exc:  # the directory is gone: still answer, with what we have
            logger.warning("cannot write this worker's metrics: %s", exc)
            own = self.own()
        live = [own]
        # Peers before retired.json: a peer retired in between is then found in retired.json.
        for path in sorted(self.directory.glob("*.json")):
            if path.name in (RETIRED, f"{self.member.name}.json"):
                continue
            data = _read(path)
            if data is not None:
                live.append(data)
        retired = _read(self.directory / RETIRED)
        return generate_latest(_Families(merge(live, retired, time.time())))

    async def run(self) -> None:
        while True:
            try:
                self.publish()
            except OSError as exc:
                if not self._failing:
                    logger.warning("cannot write this worker's metrics: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    logger.info("writing this worker's metrics again")
                self._failing = False
            await asyncio.sleep(SNAPSHOT_INTERVAL)


def install(app: Quart, member: GroupMember) -> None:
    """Publish the worker's snapshots while `app` serves, and render the group at /metrics."""
    task: asyncio.Task[None] | None = None

    async def start() -> None:  # after the lifespan's start: the Services exist
        nonlocal task
        svc = app.extensions[SERVICES_KEY]
        assert isinstance(svc, Services)
        group = GroupMetrics(member, svc.metrics.registry)
        app.extensions[EXTENSION_KEY] = group
        task = asyncio.create_task(group.run(), name="metrics-snapshots")

    async def stop() -> None:
        app.extensions.pop(EXTENSION_KEY, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.before_serving(start)
    app.after_serving(stop)


def retire(member: GroupMember) -> None:
    """Called by the supervisor once the worker is dead: keep its counters, drop its gauges."""
    directory = Path(member.directory)
    retired = _read(directory / RETIRED) or {"members": [], "families": []}
    if member.name in retired["members"]:
        return
    last = _read(directory / f"{member.name}.json")  # None: it died before its first write
    merged = _Merge()
    merged.add(retired["families"], None)
    if last is not None:
        merged.add(last["families"], None)
    retired = {
        "members": [*retired["members"], member.name],
        "families": [f.to_json() for f in merged.families.values()],
    }
    # retired.json first, then the snapshot: a reader sees the worker in one or the other.
    _write(directory, RETIRED.removesuffix(".json"), retired)
    for leftover in (f"{member.name}.json", f".{member.name}.tmp"):
        with contextlib.suppress(FileNotFoundError):
            (directory / leftover).unlink()
