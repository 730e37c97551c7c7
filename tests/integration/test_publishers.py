"""`publishers` against a real Redis, received by a real gateway connection."""

from __future__ import annotations

import asyncio
import enum
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

import events
import publishers
from events.channels import history_key
from publishers import (
    BatchOrchestratorPublisher,
    ClassManagementPublisher,
    EssayLifecyclePublisher,
    EventPublisher,
    FileServicePublisher,
    InvalidEventError,
    PublishError,
)
from tests.conftest import LiveGateway
from tests.support import free_port, make_token, ws_next


@pytest.fixture(name="client")
async def _client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(name="publisher")
def _publisher(client: aioredis.Redis) -> EventPublisher:
    return EventPublisher(client)


class Phase(enum.Enum):
    SPELLCHECK = "spellcheck"
    NLP = "nlp"


class Parsed:
    def __init__(self, name: str | None) -> None:
        self.student_name = name


Call = Callable[[EventPublisher, str], Awaitable[str | None]]

CALLS: dict[str, tuple[Call, dict[str, Any]]] = {
    "file_added": (
        lambda p, u: FileServicePublisher(p).publish_file_added_event("b1", "e1", "a.docx", u),
        {"event": "batch_file_added", "batch_id": "b1", "essay_id": "e1", "filename": "a.docx"},
    ),
    "file_removed": (
        lambda p, u: FileServicePublisher(p).publish_file_removed_event("b1", "e1", "a.docx", u),
        {"event": "batch_file_removed", "batch_id": "b1", "essay_id": "e1", "filename": "a.docx"},
    ),
    "parsing_completed": (
        lambda p, u: FileServicePublisher(p).publish_student_parsing_completed_event(
            "b1", [Parsed("Ada"), Parsed(None), {"student_name": "Bo"}, {"student_name": ""}], u
        ),
        {
            "event": "student_parsing_completed",
            "batch_id": "b1",
            "parsed_count": 2,
            "total_count": 4,
        },
    ),
    "class_created": (
        lambda p, u: ClassManagementPublisher(p).publish_class_created_event("c1", "9A", u),
        {"event": "class_created", "class_id": "c1", "class_designation": "9A"},
    ),
    "class_updated": (
        lambda p, u: ClassManagementPublisher(p).publish_class_updated_event("c1", "9B", u),
        {"event": "class_updated", "class_id": "c1", "class_designation": "9B"},
    ),
    "student_created": (
        lambda p, u: ClassManagementPublisher(p).publish_student_created_event(
            "s1", "Ada", "ada@x.org", u
        ),
        {
            "event": "student_created",
            "student_id": "s1",
            "student_name": "Ada",
            "student_email": "ada@x.org",
        },
    ),
    "student_updated": (
        lambda p, u: ClassManagementPublisher(p).publish_student_updated_event(
            "s1", "Ada L", None, u
        ),
        {
            "event": "student_updated",
            "student_id": "s1",
            "student_name": "Ada L",
            "student_email": None,
        },
    ),
    "association": (
        lambda p, u: ClassManagementPublisher(p).publish_essay_student_association_event(
            "b1", "e1", "s1", "manual", u
        ),
        {
            "event": "essay_student_association_updated",
            "batch_id": "b1",
            "essay_id": "e1",
            "student_id": "s1",
            "association_method": "manual",
        },
    ),
    "phase_concluded": (
        lambda p, u: BatchOrchestratorPublisher(p).publish_batch_phase_concluded_event(
            "b1", "SPELLCHECK", "COMPLETED", u
        ),
        {
            "event": "batch_phase_concluded",
            "batch_id": "b1",
            "phase": "spellcheck",
            "status": "completed",
        },
    ),
    "locked_when_spellcheck_begins": (
        lambda p, u: BatchOrchestratorPublisher(p).publish_phase_initiated_event(
            "b1", Phase.SPELLCHECK, u
        ),
        {"event": "batch_locked_for_processing", "batch_id": "b1"},
    ),
    "essay_status": (
        lambda p, u: EssayLifecyclePublisher(p).publish_essay_status_updated_event(
            "b1", "e1", "Spellchecked_Success", u, phase=Phase.SPELLCHECK
        ),
        {
            "event": "essay_status_updated",
            "batch_id": "b1",
            "essay_id": "e1",
            "status": "spellchecked_success",
            "phase": "spellcheck",
        },
    ),
}


@pytest.mark.parametrize("name", CALLS)
async def test_each_publisher_method_reaches_a_connected_client(
    name: str, live: LiveGateway, publisher: EventPublisher, user_id: str
) -> None:
    call, expected = CALLS[name]
    async with connect(f"{live.ws_url}/ws?token={make_token(user_id)}") as conn:
        assert (await ws_next(conn))["event"] == "connected"
        event_id = await call(publisher, user_id)
        received = await ws_next(conn)
    assert received["id"] == event_id
    assert {k: received[k] for k in expected} == expected
    assert "timestamp" in received
    model = events.parse_event(received)  # the payload matches its `events` model
    assert model.event == expected["event"]
    assert set(received) - {"id"} == set(model.model_dump()) - {"id"}


async def test_published_events_reach_every_covered_type() -> None:
    covered = {expected["event"] for _, expected in CALLS.values()}
    assert covered == events.DOMAIN_EVENT_TYPES


async def test_lock_is_only_published_when_spellcheck_begins(
    publisher: EventPublisher, client: aioredis.Redis, user_id: str
) -> None:
    orchestrator = BatchOrchestratorPublisher(publisher)
    assert await orchestrator.publish_phase_initiated_event("b1", Phase.NLP, user_id) is None
    assert await orchestrator.publish_phase_initiated_event("b1", "cj_assessment", user_id) is None
    assert await client.xlen(history_key(user_id)) == 0
    assert await orchestrator.publish_phase_initiated_event("b1", "SpellCheck", user_id) is not None
    assert await client.xlen(history_key(user_id)) == 1


async def test_publish_stores_history_and_returns_increasing_ids(
    publisher: EventPublisher, client: aioredis.Redis, user_id: str
) -> None:
    ids = [
        await publisher.publish(
            user_id, events.ClassCreated(class_id=str(i), class_designation="x")
        )
        for i in range(3)
    ]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    entries = await client.xrange(history_key(user_id))
    assert [e[0].decode() for e in entries] == ids
    stored = json.loads(entries[0][1][b"e"])
    assert "id" not in stored
    assert stored["class_id"] == "0"
    assert await client.ttl(history_key(user_id)) > 0


async def test_zero_receivers_is_normal(publisher: EventPublisher, user_id: str) -> None:
    assert await publisher.publish(
        user_id, {"event": "class_created", "class_id": "c", "class_designation": "d"}
    )


async def test_history_is_capped_by_length_and_age(client: aioredis.Redis, user_id: str) -> None:
    by_length = EventPublisher(client, history_max_events=5)
    for i in range(20):
        await by_length.publish(
            user_id, events.ClassCreated(class_id=str(i), class_designation="x")
        )
    assert await client.xlen(history_key(user_id)) == 5
    other = user_id + "-age"
    by_age = EventPublisher(client, history_ttl_seconds=1)
    await by_age.publish(other, events.ClassCreated(class_id="old", class_designation="x"))
    await asyncio.sleep(1.2)
    await by_age.publish(other, events.ClassCreated(class_id="new", class_designation="x"))
    entries = await client.xrange(history_key(other))
    assert [json.loads(e[1][b"e"])["class_id"] for e in entries] == ["new"]


@pytest.mark.parametrize(
    "event",
    [
        {"event": "class_created"},
        {"event": "nope"},
        {"event": "ping"},
        {"event": "connected", "connection_id": "1", "transport": "ws", "heartbeat_interval": 1},
        events.Ping(),
    ],
)
async def test_invalid_events_are_refused(
    publisher: EventPublisher, client: aioredis.Redis, user_id: str, event: Any
) -> None:
    with pytest.raises(InvalidEventError):
        await publisher.publish(user_id, event)
    assert await client.exists(history_key(user_id)) == 0
    assert isinstance(InvalidEventError("x"), ValueError)


async def test_empty_user_is_refused(publisher: EventPublisher) -> None:
    with pytest.raises(InvalidEventError):
        await publisher.publish("", events.ClassCreated(class_id="c", class_designation="d"))


async def test_redis_down_raises_publish_error() -> None:
    async with EventPublisher.from_url(f"redis://127.0.0.1:{free_port()}/0") as publisher:
        with pytest.raises(PublishError):
            await publisher.publish("u", events.ClassCreated(class_id="c", class_designation="d"))


@pytest.fixture(name="silent_server")
def _silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


async def test_a_hung_redis_is_bounded_by_the_timeout(silent_server: int) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=silent_server)
    publisher = EventPublisher(client, timeout=0.3)
    with pytest.raises(PublishError, match="timed out"):
        await publisher.publish("u", events.ClassCreated(class_id="c", class_designation="d"))
    await client.aclose()


def test_exported_api() -> None:
    assert set(publishers.__all__) == {
        "BatchOrchestratorPublisher",
        "ClassManagementPublisher",
        "EssayLifecyclePublisher",
        "EventPublisher",
        "FileServicePublisher",
        "InvalidEventError",
        "PublishError",
    }
    for name in publishers.__all__:
        assert getattr(publishers, name).__module__.startswith("publishers")


async def test_oversized_events_are_refused(client: aioredis.Redis, user_id: str) -> None:
    publisher = EventPublisher(client, max_event_bytes=1024)
    with pytest.raises(InvalidEventError, match="limit"):
        await publisher.publish(
            user_id, events.ClassCreated(class_id="c", class_designation="x" * 2000)
        )
    assert await client.exists(history_key(user_id)) == 0
