"""The origin design's Checkpoint 3.4, on our system: a real gateway process, real Redis,
loopback stand-ins for the aggregator and BOS, and an orchestrator publishing with `publishers`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from publishers import BatchOrchestratorPublisher, EventPublisher
from tests.servers import ProcessFactory
from tests.support import Reply, SseClient, Upstream, make_token, ws_next

ROOT = Path(__file__).resolve().parents[2]


async def test_hydrate_then_live_updates_then_resume(
    gateway_process: ProcessFactory, upstream: Upstream, redis_url: str, user_id: str
) -> None:
    batch = "batch-e2e"
    upstream.reply(
        f"/internal/v1/batches/{batch}/pipeline-state",
        Reply(
            body={
                "batch_id": batch,
                "user_id": user_id,
                "pipeline_state": {
                    "last_updated": "2026-11-26T12:00:00Z",
                    "spellcheck": {"status": "pending"},
                },
            }
        ),
    )
    gateway = await gateway_process(
        {"REDIS_URL": redis_url, "RESULT_AGGREGATOR_URL": upstream.url, "BOS_URL": upstream.url}
    )
    token = make_token(user_id)
    async with (
        httpx.AsyncClient(timeout=10) as http,
        EventPublisher.from_url(redis_url) as publisher,
    ):
        orchestrator = BatchOrchestratorPublisher(publisher)
        async with http.stream(
            "GET", f"{gateway.url}/events", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            sse = SseClient(response)
            async with connect(f"{gateway.ws_url}/ws?token={token}") as ws:
                # 1. Subscribe, and only after `connected` hydrate: nothing can fall in between.
                assert (await sse.next()).data["event"] == "connected"
                assert (await ws_next(ws))["event"] == "connected"
                status = await http.get(
                    f"{gateway.url}/v1/batches/{batch}/status",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert status.status_code == 200
                assert status.json()["status"] == "pending_aggregation"
                assert "user_id" not in status.text

                # 2. The orchestrator starts spellcheck (lock), later concludes it.
                locked = await orchestrator.publish_phase_initiated_event(
                    batch, "SPELLCHECK", user_id
                )
                concluded = await orchestrator.publish_batch_phase_concluded_event(
                    batch, "spellcheck", "completed", user_id
                )
                for expected_id, kind in (
                    (locked, "batch_locked_for_processing"),
                    (concluded, "batch_phase_concluded"),
                ):
                    over_sse = await sse.next_domain()
                    over_ws = await ws_next(ws)
                    assert (over_sse.data["event"], over_sse.id) == (kind, expected_id)
                    assert (over_ws["event"], over_ws["id"]) == (kind, expected_id)
                last_seen = concluded

        # 3. The client is away while three events are published.
        missed = [
            await orchestrator.publish_batch_phase_concluded_event(
                batch, phase, "completed", user_id
            )
            for phase in ("nlp", "ai_feedback", "cj_assessment")
        ]

        # 4. It comes back with its last id: exactly those three, in order, then live events.
        async with http.stream(
            "GET",
            f"{gateway.url}/events",
            headers={"Authorization": f"Bearer {token}", "Last-Event-ID": last_seen},
        ) as response:
            sse = SseClient(response)
            assert (await sse.next()).data["event"] == "connected"
            assert [(await sse.next_domain()).id for _ in missed] == missed
            live = await orchestrator.publish_batch_phase_concluded_event(
                batch, "done", "completed", user_id
            )
            assert (await sse.next_domain()).id == live
        async with connect(f"{gateway.ws_url}/ws?token={token}&last_event_id={last_seen}") as ws:
            assert (await ws_next(ws))["event"] == "connected"
            assert [(await ws_next(ws))["id"] for _ in range(4)] == [*missed, live]


async def test_the_publishing_example_runs(
    gateway_process: ProcessFactory, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process({"REDIS_URL": redis_url})
    async with connect(f"{gateway.ws_url}/ws?token={make_token(user_id)}") as ws:
        assert (await ws_next(ws))["event"] == "connected"
        example = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "docs/examples/publish_batch_run.py"),
            user_id,
            "b-42",
            env={"REDIS_URL": redis_url, "PATH": ""},
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(example.communicate(), 60)
        assert example.returncode == 0
        ids = stdout.decode().split()
        received = [await ws_next(ws) for _ in ids]
    assert [m["id"] for m in received] == ids
    assert [m["event"] for m in received] == [
        "batch_file_added",
        "batch_file_added",
        "batch_locked_for_processing",
        "essay_status_updated",
        "essay_status_updated",
        "batch_phase_concluded",
    ]
    assert json.dumps(received).count('"b-42"') == 6
