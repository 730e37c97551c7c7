"""`python -m bench --smoke` runs both systems end to end and reports sane numbers.

No latency or throughput thresholds: only that every scenario completed and that what it
reports is internally consistent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="the benchmark starts its own redis-server"
)


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
@pytest.mark.parametrize("scenario", ["fanout", "group"])
def test_fanout_steps_deliver_everything_once(smoke: dict[str, Any], scenario: str) -> None:
    for system in ("gateway", "baseline"):
        data = smoke[scenario][system]
        assert data["connected"] == data["connections"]
        assert {ladder["mode"] for ladder in data["ladders"]} == {"publish", "publisher"}
        for ladder in data["ladders"]:
            assert ladder["steps"]
            for step in ladder["steps"]:
                assert step["received"] > 0
                assert step["received"] + step["lost"] >= step["expected"] * 0.5
                assert step["duplicates"] >= 0
                assert step["out_of_order"] >= 0
                assert 0 <= step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["max_ms"]
                assert step["achieved_rate"] > 0


@pytest.mark.timeout(180)
def test_replay_and_recovery_reported(smoke: dict[str, Any]) -> None:
    replay = smoke["replay"]["gateway"]
    assert replay["runs"]
    assert all(r["received"] + r["lost"] == 1000 for r in replay["runs"])
    assert replay["median_total_ms"] is None or replay["median_total_ms"] > 0
    for system in ("gateway", "baseline"):
        rec = smoke["recovery"][system]
        assert rec["connected"] == rec["connections"]
        assert rec["still_open"] + rec["closed"] == rec["connected"]
        assert rec["reached"] <= rec["still_open"]
    assert smoke["headline"] is not None
