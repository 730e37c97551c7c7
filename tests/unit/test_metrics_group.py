"""Merging the workers' metrics: counters summed (retired workers included), gauges per worker,
and a worker retired while a scrape reads the directory counted exactly once."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from quart_gateway.live.multiplexer import MultiplexerStatistics
from quart_gateway.ops import metrics_group
from quart_gateway.ops.metrics import Metrics
from quart_gateway.ops.metrics_group import GroupMember, GroupMetrics, merge, retire, snapshot


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def worker(directory: Path, name: str, pid: str, ws: int, opened: int) -> GroupMetrics:
    metrics = Metrics()
    listener = MultiplexerStatistics(
        connected=True,
        healthy=True,
        channels=3,
        subscribers=ws,
        reconnects=0,
        seconds_since_heard=0.5,
        canary_round_trip=0.001,
        deaf_detections=0,
    )
    metrics.add_listener_gauges(lambda: listener)
    metrics.connections.labels("ws").set(ws)
    metrics.connections_total.labels("ws").inc(opened)
    group = GroupMetrics(GroupMember(str(directory), name), metrics.registry)
    group.worker = pid
    return group


def test_counters_are_summed_and_gauges_labelled_per_worker(tmp_path: Path) -> None:
    a = worker(tmp_path, "worker-0", "101", ws=3, opened=5)
    b = worker(tmp_path, "worker-1", "102", ws=4, opened=7)
    b.publish()
    got = samples(a.render())
    opened = ("gateway_connections_opened_total", frozenset({("transport", "ws")}))
    assert got[opened] == 12
    assert got["gateway_connections", frozenset({("transport", "ws"), ("worker", "101")})] == 3
    assert got["gateway_connections", frozenset({("transport", "ws"), ("worker", "102")})] == 4
    assert got["gateway_subscribers", frozenset({("worker", "102")})] == 4  # custom collector
    assert got[metrics_group.AGE, frozenset({("worker", "101")})] < 1
    assert ("gateway_connections", frozenset({("transport", "ws")})) not in got  # never unlabelled


def test_a_retired_worker_keeps_its_counters_and_loses_its_gauges(tmp_path: Path) -> None:
    a = worker(tmp_path, "worker-0", "101", ws=3, opened=5)
    b = worker(tmp_path, "worker-1", "102", ws=4, opened=7)
    b.publish()
    retire(b.member)
    retire(b.member)  # twice: still counted once
    c = worker(tmp_path, "worker-2", "103", ws=1, opened=1)  # its replacement
    c.publish()
    got = samples(a.render())
    assert got["gateway_connections_opened_total", frozenset({("transport", "ws")})] == 13
    workers = {dict(labels)["worker"] for name, labels in got if name == "gateway_connections"}
    assert workers == {"101", "103"}
    assert not (tmp_path / "worker-1.json").exists()


def test_a_worker_retired_during_a_scrape_is_counted_once(tmp_path: Path) -> None:
    a = worker(tmp_path, "worker-0", "101", ws=0, opened=1)
    b = worker(tmp_path, "worker-1", "102", ws=0, opened=10)
    own, peer = a.publish(), b.publish()
    retire(b.member)  # after the scrape read b's file, before it read retired.json
    retired = metrics_group._read(tmp_path / metrics_group.RETIRED)
    families = merge([own, peer], retired, now=own["written"])
    counter = next(f for f in families if f.name == "gateway_connections_opened")
    totals = [s.value for s in counter.samples if s.name.endswith("_total")]
    assert totals == [11]


def test_a_worker_that_never_wrote_is_retired_without_error(tmp_path: Path) -> None:
    retire(GroupMember(str(tmp_path), "worker-9"))
    assert (tmp_path / metrics_group.RETIRED).exists()


def test_snapshot_keeps_every_sample(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.rejected.labels("ws", "invalid_token").inc()
    data = snapshot(metrics.registry, "1")
    rejected = next(f for f in data["families"] if f["name"] == "gateway_connections_rejected")
    assert rejected["type"] == "counter"
    assert [
        "gateway_connections_rejected_total",
        {"transport": "ws", "reason": "invalid_token"},
        1.0,
    ] in rejected["samples"]


def test_a_scrape_still_answers_when_the_directory_is_gone(tmp_path: Path) -> None:
    a = worker(tmp_path / "gone", "worker-0", "101", ws=2, opened=2)
    got = samples(a.render())
    assert got["gateway_connections", frozenset({("transport", "ws"), ("worker", "101")})] == 2
