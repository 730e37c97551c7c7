"""`publishers` against a real Redis, received by a real gateway connection."""

from __future__ import annotations

import asyncio
import enum
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
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
from publishers._publisher import encode
from tests.servers import LiveGateway
from tests.support import free_port, make_token, ws_next


@pytest.fixture(name="client")
async def _client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def history(client: aioredis.Redis, user: str) -> list[tuple[str, dict[str, Any]]]:
    """The user's history: (id, event without its id) in order."""
    entries: Any = await client.xrange(history_key(user))
    return [(entry_id.decode(), json.loads(fields[b"e"])) for entry_id, fields in entries]


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
    entries = await history(client, user_id)
    assert [entry_id for entry_id, _ in entries] == ids
    stored = entries[0][1]
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
    assert [event["class_id"] for _, event in await history(client, other)] == ["new"]


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


@pytest.mark.parametrize(
    "bad_user",
    ["", "   ", "\t", " u", "u ", "u\n", "a\r\nb", "a\x00b", "a\ud800", "x" * 256, None, 42, b"u"],
)
async def test_invalid_user_ids_are_refused(
    publisher: EventPublisher, client: aioredis.Redis, bad_user: Any
) -> None:
    keys_before = await client.dbsize()
    with pytest.raises(InvalidEventError, match="user id"):
        await publisher.publish(bad_user, events.ClassCreated(class_id="c", class_designation="d"))
    with pytest.raises(InvalidEventError, match="user id"):
        # Refused for every phase, even one that publishes nothing.
        await BatchOrchestratorPublisher(publisher).publish_phase_initiated_event(
            "b1", "nlp", bad_user
        )
    assert await client.dbsize() == keys_before


@pytest.mark.parametrize(
    "good_user", ["3f0c8c2e-8d7b-4b5e-9a57-1f0e0d6c9b11", "ada@example.org", "Ærø 用户", "x" * 255]
)
async def test_any_valid_user_id_is_published(
    publisher: EventPublisher, client: aioredis.Redis, good_user: str
) -> None:
    assert events.valid_user_id(good_user)
    event_id = await publisher.publish(
        good_user, events.ClassCreated(class_id="c", class_designation="d")
    )
    assert [entry_id for entry_id, _ in await history(client, good_user)] == [event_id]
    await client.delete(history_key(good_user))


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


def _nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


BASE = {"event": "class_created", "class_id": "c", "class_designation": "d"}

# Each is refused with InvalidEventError; before, each raised something else or went out.
UNSENDABLE: dict[str, Any] = {
    "surrogate_in_a_field": {**BASE, "class_designation": "9\ud800A"},
    "surrogate_in_an_extra_key": {**BASE, "extra": {"\udc00": 1}},
    "object": {**BASE, "extra": object()},
    "bytes_not_utf8": {**BASE, "extra": b"\xff\xfe"},
    "nan": {**BASE, "extra": float("nan")},
    "infinity_nested": {**BASE, "extra": [1, {"x": float("-inf")}]},
    "tuple_key": {**BASE, "extra": {(1, 2): "x"}},
    "deeply_nested": {**BASE, "extra": _nested(10_000)},
    "wrong_type": {**BASE, "class_id": 7},
    "bad_id": {**BASE, "id": ["not", "an", "id"]},
    "model_with_an_object": events.ClassCreated(class_id="c", class_designation="d", x=object()),
    "model_with_a_surrogate": events.ClassCreated(class_id="c\udfff", class_designation="d"),
    "model_copy_skipping_validation": events.ClassCreated(
        class_id="c", class_designation="d"
    ).model_copy(update={"class_id": None}),
    "model_construct": events.ClassCreated.model_construct(
        class_id=5,  # type: ignore[arg-type]
        class_designation="d",
    ),
    "not_a_mapping": "class_created",
    "none": None,
}


@pytest.mark.parametrize("name", UNSENDABLE)
async def test_unsendable_events_are_invalid_events(
    publisher: EventPublisher, client: aioredis.Redis, user_id: str, name: str
) -> None:
    with pytest.raises(InvalidEventError):
        await publisher.publish(user_id, UNSENDABLE[name])
    assert await client.exists(history_key(user_id)) == 0


def test_json_friendly_extras_are_kept() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    _, text = encode({**BASE, "when": when, "n": 10**30, "ok": b"yes", "tags": ("a", "b")})
    decoded = json.loads(text)
    assert decoded["when"] == "2024-05-01T12:00:00Z"  # as pydantic writes it
    assert decoded["n"] == 10**30
    assert decoded["ok"] == "yes"
    assert decoded["tags"] == ["a", "b"]


DomainCall = Callable[[EventPublisher, str], Awaitable[str | None]]

BAD_DOMAIN_CALLS: dict[str, DomainCall] = {
    "surrogate_in_filename": lambda p, u: FileServicePublisher(p).publish_file_added_event(
        "b1", "e1", "a\ud800.docx", u
    ),
    "none_batch_id": lambda p, u: FileServicePublisher(p).publish_file_removed_event(
        None,  # type: ignore[arg-type]
        "e1",
        "a.docx",
        u,
    ),
    "parsing_results_not_iterable": lambda p, u: FileServicePublisher(
        p
    ).publish_student_parsing_completed_event(
        "b1",
        None,  # type: ignore[arg-type]
        u,
    ),
    "undecodable_bytes_designation": lambda p, u: ClassManagementPublisher(
        p
    ).publish_class_created_event(
        "c1",
        b"9\xff",  # type: ignore[arg-type]
        u,
    ),
    "surrogate_in_student_name": lambda p, u: ClassManagementPublisher(
        p
    ).publish_student_created_event("s1", "\udcff", None, u),
    "int_email": lambda p, u: ClassManagementPublisher(p).publish_student_updated_event(
        "s1",
        "Ada",
        5,  # type: ignore[arg-type]
        u,
    ),
    "bytes_phase": lambda p, u: BatchOrchestratorPublisher(p).publish_batch_phase_concluded_event(
        "b1", b"spellcheck", "completed", u
    ),
    "object_phase": lambda p, u: BatchOrchestratorPublisher(p).publish_phase_initiated_event(
        "b1", object(), u
    ),
    "int_enum_status": lambda p, u: EssayLifecyclePublisher(p).publish_essay_status_updated_event(
        "b1", "e1", Code.OK, u
    ),
    "surrogate_reason": lambda p, u: BatchOrchestratorPublisher(p).publish_batch_locked_event(
        "b1", u, reason="\ud83d"
    ),
}


class Code(enum.Enum):
    OK = 200


@pytest.mark.parametrize("name", BAD_DOMAIN_CALLS)
async def test_domain_publishers_refuse_bad_input_with_invalid_event_error(
    publisher: EventPublisher, client: aioredis.Redis, user_id: str, name: str
) -> None:
    with pytest.raises(InvalidEventError):
        await BAD_DOMAIN_CALLS[name](publisher, user_id)
    assert await client.exists(history_key(user_id)) == 0


async def test_string_enums_of_any_kind_are_accepted(
    publisher: EventPublisher, client: aioredis.Redis, user_id: str
) -> None:
    class Status(enum.StrEnum):
        COMPLETED = "COMPLETED"

    await BatchOrchestratorPublisher(publisher).publish_batch_phase_concluded_event(
        "b1", Phase.SPELLCHECK, Status.COMPLETED, user_id
    )
    ((_, stored),) = await history(client, user_id)
    assert (stored["phase"], stored["status"]) == ("spellcheck", "completed")


# --- properties -------------------------------------------------------------------------------

# Every code point, lone surrogates included; bytes, any float (NaN and infinities too).
_text = st.text(st.characters(exclude_categories=()), max_size=20)
_json_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=30,
)


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


@settings(max_examples=200)
@given(
    fields=st.dictionaries(_text, _json_ish, max_size=6),
    event=st.sampled_from(sorted(events.DOMAIN_EVENT_TYPES)) | _text,
)
def test_encode_returns_utf8_json_or_raises_invalid_event_error(
    fields: dict[str, Any], event: str
) -> None:
    try:
        model, text = encode({"event": event, **fields})
    except InvalidEventError:
        return
    text.encode("utf-8")
    decoded = json.loads(text, parse_constant=_refuse_constant)
    assert decoded["event"] == model.event
    assert "id" not in decoded
    assert events.parse_event(decoded).event in events.DOMAIN_EVENT_TYPES


@settings(max_examples=200)
@given(
    fields=st.fixed_dictionaries({"class_id": _text, "class_designation": _text}), extra=_json_ish
)
def test_encode_of_a_class_event_with_any_extra(fields: dict[str, str], extra: Any) -> None:
    try:
        _, text = encode({"event": "class_created", **fields, "extra": extra})
    except InvalidEventError:
        return
    decoded = json.loads(text.encode("utf-8"), parse_constant=_refuse_constant)
    assert decoded["class_id"] == fields["class_id"]
