"""`python -m bench --smoke` runs both systems end to end and reports sane numbers.

No latency or throughput thresholds: only that every scenario completed and that what it
reports is internally consistent.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(
        shutil.which("redis-server") is None, reason="the benchmark starts its own redis-server"
    ),
]


@pytest.fixture(name="smoke", scope="module")
def _smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "results.md").read_text().startswith("# Benchmark results")
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


@pytest.mark.timeout(180)
def test_idle_connections_all_open_and_measured(smoke: dict[str, Any]) -> None:
    for system in ("gateway", "baseline"):
        (run,) = smoke["idle"][system]
        assert run["connected"] == run["size"] > 0
        assert run["server_alive"]
        assert run["rss_per_conn_kib"] is not None
        assert run["rss_per_conn_kib"] > 0
        assert run["cpu_ms_per_setup"] is not None
        assert run["cpu_ms_per_setup"] > 0
    # The design difference the suite exists to show: one subscription per client or not.
    assert smoke["idle"]["baseline"][0]["redis_clients"] >= smoke["idle"]["baseline"][0]["size"]
    assert smoke["idle"]["gateway"][0]["redis_clients"] < smoke["idle"]["gateway"][0]["size"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("scenario", "connections", "users", "rates"),
    [
        ("fanout", "fanout_connections", "fanout_connections", "rates"),
        ("group", "group_connections", "group_users", "group_rates"),
    ],
)
def test_fanout_steps_deliver_everything_once(
    smoke: dict[str, Any], scenario: str, connections: str, users: str, rates: str
) -> None:
    options = smoke["options"]
    fan = options[connections] // options[users]  # connections per user
    for system in ("gateway", "baseline"):
        data = smoke[scenario][system]
        assert data["connected"] == data["connections"] == options[connections]
        assert data["errors"] == {}
        assert [ladder["mode"] for ladder in data["ladders"]] == options["modes"]
        for ladder in data["ladders"]:
            assert ladder["steps"]
            ok_rates = [step["rate"] for step in ladder["steps"] if step["ok"]]
            assert ladder["saturation_rate"] in [0, *ok_rates]
            for step in ladder["steps"]:
                assert step["rate"] in options[rates]
                # Round-robin over the users: every one of their connections gets each event.
                published = int(step["rate"] * options["step_seconds"])
                assert step["expected"] == published * fan > 0
                # At smoke rates neither system may lose, repeat or reorder an event.
                assert step["received"] == step["expected"], (system, ladder["mode"], step)
                assert step["lost"] == 0
                assert step["duplicates"] == 0
                assert step["out_of_order"] == 0
                assert step["closed"] == 0
                assert step["resyncs"] == 0
                assert 0 < step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["max_ms"]
                assert step["achieved_rate"] > 0
                assert step["deliveries_per_s"] > 0


@pytest.mark.timeout(180)
def test_replay_delivers_every_missed_event_once(smoke: dict[str, Any]) -> None:
    replay = smoke["replay"]["gateway"]
    missed = smoke["options"]["replay_events"]
    assert replay["missed_events"] == missed > 0
    assert replay["runs"]
    for run in replay["runs"]:
        assert run["received"] == missed
        assert (run["lost"], run["duplicates"], run["out_of_order"], run["resyncs"]) == (0, 0, 0, 0)
        assert 0 < run["after_connected_ms"] <= run["total_ms"]
    assert replay["complete"] is True
    totals = [run["total_ms"] for run in replay["runs"]]
    assert replay["median_total_ms"] == round(statistics.median(totals), 2)


@pytest.mark.timeout(180)
def test_recovery_after_a_redis_restart(smoke: dict[str, Any]) -> None:
    connections = smoke["options"]["recovery_connections"]
    gateway, baseline = smoke["recovery"]["gateway"], smoke["recovery"]["baseline"]
    assert gateway["connected"] == baseline["connected"] == connections
    # The gateway keeps every connection, tells each to resync, and serves all of them again.
    assert gateway["still_open"] == gateway["reached"] == gateway["resyncs"] == connections
    assert gateway["closed"] == 0
    assert 0 < gateway["first_ms"] <= gateway["median_ms"] <= gateway["all_open_ms"]
    # The baseline's clients lose their stream with their Redis connection.
    assert baseline["closed"] == connections
    assert baseline["still_open"] == baseline["reached"] == 0
    assert baseline["all_open_ms"] is None


@pytest.mark.timeout(180)
def test_headline_summarises_the_scenarios(smoke: dict[str, Any]) -> None:
    headline, idle = smoke["headline"], smoke["idle"]
    for system in ("gateway", "baseline"):
        (run,) = idle[system]
        assert headline[f"{system}_max_live"] == run["connected"]
        assert headline[f"{system}_rss_per_conn_kib"] == run["rss_per_conn_kib"]
        assert headline[f"{system}_redis_conns"] == run["redis_clients"]
    assert headline["replay_ms"] == smoke["replay"]["gateway"]["median_total_ms"]
    assert headline["replay_complete"] is True
    assert headline["recovery_gateway"] == smoke["recovery"]["gateway"]


@pytest.mark.timeout(180)
def test_restart_clients_come_back(smoke: dict[str, Any]) -> None:
    options = smoke["options"]
    (size,) = options["restart_connections"]
    (grace,) = options["restart_graces"]
    for system in ("gateway", "baseline"):
        (run,) = smoke["restart"][system]
        assert (run["connections"], run["grace_s"]) == (size, grace)
        assert (run["sse"], run["ws"], run["users"]) == (size - size // 4, size // 4, size // 4)
        assert run["connected"] == size
        # Every client is back on the replacement, and still there at the end.
        assert run["back"] == run["live_at_end"] == size
        assert 0 < run["listener_closed_s"] <= run["new_listening_s"] <= run["all_back_s"]
        assert run["back_p50_s"] <= run["back_max_s"] <= run["all_back_s"]
        assert run["published"] > 0
        assert run["expected"] == run["published"] * 4  # each user: 3 SSE + 1 WebSocket
        assert run["received"] + run["lost"] == run["expected"]
        assert run["duplicates"] == 0
        assert run["http_5xx"] == 0
    gateway, baseline = smoke["restart"]["gateway"][0], smoke["restart"]["baseline"][0]
    # Clients resume by id (or by the cursor of `connected`): nothing lost, nothing twice.
    assert (gateway["lost"], gateway["out_of_order"], gateway["resyncs"]) == (0, 0, 0)
    assert gateway["received"] == gateway["expected"]
    # Every stream was ended by the drain with a farewell that names the restart.
    assert gateway["events"].get("disconnect server_restart", 0) >= 1
    # The origin design has no ids: what was published while a client was away is gone.
    assert baseline["lost"] > 0
