"""Hostile traffic on the users' channels must not touch the other users' streams.

A publisher sends a corpus of hostile payloads with bare `PUBLISH` (a fixed, handwritten set
and a few hundred seeded random ones) to the victims' own channels and to third channels,
while two victims, one on SSE and one on WebSocket, receive a steady flow of valid events
from `publishers.EventPublisher`. Real Redis, the gateway served by Hypercorn on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from events import REGISTERED_EVENT_TYPES, SYSTEM_EVENT_TYPES
from events.channels import user_channel
from publishers import EventPublisher
from tests.servers import LiveGateway
from tests.support import make_token, wait_until, ws_next

VALID_EVENTS = 200  # per run, split between the two victims
RUN_SECONDS = 3.0
RANDOM_ITEMS = 300
SEED = 20_240_611
INJECTION = "a\n\nevent: disconnect\nretry: 1\n\ndata: {}"


@pytest.fixture(name="redis")
async def _redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


# --- the corpus ----------------------------------------------------------------------------------


def handwritten_corpus() -> list[bytes]:
    """One of each hostile shape the gateway has to survive."""

    def event(**fields: Any) -> dict[str, Any]:
        return {"event": "class_created", "class_id": "hostile", "class_designation": "x", **fields}

    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        # Nesting: far beyond any parser's recursion limit, alone and inside an event.
        deep,
        b'{"event":"class_created","class_id":' + deep + b"}",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        # Nesting a browser parses, forwarded as it is.
        json.dumps(event(n=json.loads("[" * 300 + "]" * 300))).encode(),
        # Not UTF-8, and UTF-8 that encodes a surrogate.
        b'{"event":"class_created","class_id":"\xff\xfe","class_designation":"x"}',
        b'{"event":"class_created","class_id":"\xed\xa0\x80","class_designation":"x"}',
        b"\x80\x81\x82",
        # Lone surrogate escapes, compact and pretty-printed (which is re-encoded).
        b'{"event":"class_created","class_id":"\\ud800","class_designation":"x"}',
        b'{\n  "event": "class_created",\n  "class_id": "\\udfff",\n  "class_designation": "x"\n}',
        # NaN and Infinity: Python's json takes them, a browser's JSON.parse does not.
        b'{"event":"class_created","class_id":"c","class_designation":NaN}',
        b'{"event":"class_created","class_id":"c","class_designation":Infinity}',
        b'{"event":"class_created","class_id":"c","class_designation":-Infinity}',
        # Ids that are not stream ids: superscript, Arabic-Indic digits, beyond 2**64.
        json.dumps(event(id="²-1")).encode(),
        json.dumps(event(id="\u0661-\u0660"), ensure_ascii=False).encode(),
        json.dumps(event(id="99999999999999999999-0")).encode(),
        json.dumps(event(id="18446744073709551616-1")).encode(),
        json.dumps(event(id="1-1\n\nevent: disconnect")).encode(),
        json.dumps(event(id=12345)).encode(),
        # Oversized: beyond the 256 KiB a message may have.
        json.dumps(event(class_designation="x" * 300_000)).encode(),
        b"x" * 270_000,
        # Large but within the limit: forwarded.
        json.dumps(event(class_designation="y" * 100_000)).encode(),
        # Not objects.
        b"[]",
        b'["class_created"]',
        b'"class_created"',
        b"42",
        b"null",
        b"true",
        b"",
        b" ",
        # Unknown event types, and the gateway's own system messages, which nobody may forge.
        *(json.dumps({"event": name}).encode() for name in sorted(SYSTEM_EVENT_TYPES)),
        json.dumps({"event": "disconnect", "reason": "server_shutdown"}).encode(),
        json.dumps({"event": "resync", "reason": "history_unavailable"}).encode(),
        b'{"event":"not_an_event"}',
        b'{"event":null}',
        b'{"event":["class_created"]}',
        b'{"event":"CLASS_CREATED"}',
        b'{"event":"class_created\\u0000"}',
        b'{"type":"class_created"}',
        # CR/LF injection: as JSON escapes (forwarded on one line) ...
        json.dumps(event(x=INJECTION)).encode(),
        json.dumps({"event": "class_created", "x": "a\r\rretry: 1\r\r"}).encode(),
        # ... raw between the tokens of pretty-printed JSON (re-encoded compactly) ...
        b'{\r\n"event": "class_created",\r\n"class_id": "c",\r"class_designation": "x"\n}\r\n',
        b'\n\n{"event":"class_created","class_id":"c","class_designation":"x"}\n\nretry: 1\n\n',
        # ... raw after the object (not JSON) and raw inside a string (not JSON either).
        b'{"event":"class_created"}\n\nevent: disconnect\nretry: 1\n\n',
        b'{"event":"class_created","x":"a\n\nevent: disconnect\nretry: 1"}',
        b'{"event":"class_created","x":"a\r\rretry: 1"}',
        # Separators that are line breaks to some parsers, but not to EventSource.
        json.dumps(event(x="\u2028\u2029\x85\x0b\x0c\x1c"), ensure_ascii=False).encode(),
        # Duplicate keys, a BOM, a NUL.
        b'{"event":"class_created","event":"disconnect"}',
        b'{"event":"disconnect","event":"class_created","class_id":"dup"}',
        b'\xef\xbb\xbf{"event":"class_created","class_id":"bom","class_designation":"x"}',
        b'{"event":"class_created","class_id":"nul\x00","class_designation":"x"}',
    ]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value; objects sometimes carry a registered or a system event type."""
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] if depth < 6 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x10FFFF)]))
            for _ in range(rng.randrange(12))
        )
    if kind == "int":
        return rng.choice([0, -1, 2**63, 2**64 + 1, 10**30, rng.randrange(-1000, 1000)])
    if kind == "float":
        return rng.uniform(-1e300, 1e300)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    obj = {random_json_key(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}
    if rng.random() < 0.6:
        types = sorted(REGISTERED_EVENT_TYPES) + sorted(SYSTEM_EVENT_TYPES) + ["nope"]
        obj["event"] = rng.choice(types)
    return obj


def random_json_key(rng: random.Random) -> str:
    return rng.choice(["id", "event", "data", "retry", "class_id", "x", "\n", "\u2028", "k"])


def random_corpus(rng: random.Random, count: int) -> list[bytes]:
    """Random bytes, random JSON (compact, pretty-printed, with lone surrogates) and valid
    events with random bytes flipped, inserted or cut."""
    template = json.dumps({"event": "class_created", "class_id": "r", "class_designation": "r"})
    items: list[bytes] = []
    for _ in range(count):
        shape = rng.randrange(4)
        if shape == 0:
            items.append(rng.randbytes(rng.randrange(400)))
        elif shape == 1:
            value = random_json(rng)
            indent = rng.choice([None, None, 1, "\r\n"])
            text = json.dumps(value, indent=indent, ensure_ascii=rng.random() < 0.5)
            items.append(text.encode("utf-8", "surrogatepass"))
        elif shape == 2:
            data = bytearray(template.encode())
            for _ in range(rng.randrange(1, 6)):
                at = rng.randrange(len(data) + 1)
                op = rng.randrange(3)
                if op == 0 and at < len(data):
                    data[at] = rng.randrange(256)
                elif op == 1:
                    data[at:at] = rng.choice([b"\n", b"\r", b"\r\n", b'"', b"{", b"\\", b"\x00"])
                else:
                    del data[at:]
            items.append(bytes(data))
        else:
            junk = "".join(chr(rng.randrange(0x10FFFF)) for _ in range(rng.randrange(1, 20)))
            event = {"event": rng.choice(sorted(REGISTERED_EVENT_TYPES)), "x": junk}
            items.append(json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return items


# --- the victims -------------------------------------------------------------------------------


@dataclass
class Received:
    """What one victim's stream delivered."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    event_lines: list[str] = field(default_factory=list)  # SSE `event:` fields
    retry_lines: list[str] = field(default_factory=list)  # SSE `retry:` fields
    ended: bool = False
    error: str | None = None  # what the client could not parse

    def others(self, nonce: str) -> list[dict[str, Any]]:
        """Forwarded hostile events: every message but `connected` and the valid ones."""
        return [
            m
            for m in self.messages
            if m.get("event") != "connected" and not str(m.get("class_id")).startswith(nonce)
        ]

    def valid_ids(self, nonce: str) -> list[str]:
        return [
            m["class_id"]
            for m in self.messages
            if isinstance(m.get("class_id"), str) and m["class_id"].startswith(nonce)
        ]

    def system_events(self) -> list[str]:
        """The gateway's own messages, heartbeats left out (one may fall in the run)."""
        return [
            m["event"]
            for m in self.messages
            if m.get("event") in SYSTEM_EVENT_TYPES and m["event"] != "ping"
        ]


_SSE_LINE = re.compile(rb"\r\n|\r|\n")


async def read_sse(response: httpx.Response, into: Received) -> None:
    """Parse the stream as EventSource does: lines end at CR, LF or CRLF and nothing else.

    Not `SseClient`: httpx's `aiter_lines()` also breaks lines at U+2028, VT, FF and the like,
    which the gateway forwards inside JSON strings, and SseClient keeps only the last `retry:`
    and raises on `event:`, where this test counts both."""
    buffer = b""
    data: list[str] = []
    try:
        async for chunk in response.aiter_bytes():
            buffer += chunk
            # A CR at the end of a chunk may be the first half of a CRLF: keep it for later.
            held = b"\r" if buffer.endswith(b"\r") else b""
            *lines, rest = _SSE_LINE.split(buffer[: len(buffer) - len(held)])
            buffer = rest + held
            for raw in lines:
                line = raw.decode()
                if line == "":
                    if data:
                        into.messages.append(json.loads("\n".join(data)))
                        data = []
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    into.event_lines.append(value)
                elif name == "retry":
                    into.retry_lines.append(value)
    except (ValueError, httpx.HTTPError) as exc:
        into.error = repr(exc)
    into.ended = True


async def read_ws(ws: ClientConnection, into: Received) -> None:
    try:
        async for text in ws:
            into.messages.append(json.loads(text))
    except (ValueError, ConnectionClosed) as exc:
        into.error = repr(exc)
    into.ended = True


def dropped(live: LiveGateway, reason: str) -> float:
    value = live.services.metrics.registry.get_sample_value(
        "gateway_events_dropped_total", {"reason": reason}
    )
    return value or 0.0


async def poll_readiness(http: httpx.AsyncClient, url: str, statuses: list[int]) -> None:
    while True:
        statuses.append((await http.get(f"{url}/readyz")).status_code)
        await asyncio.sleep(0.05)


# --- the test ----------------------------------------------------------------------------------


async def test_hostile_publishes_leave_other_streams_intact(
    live: LiveGateway, http: httpx.AsyncClient, redis: aioredis.Redis, redis_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    sse_victim, ws_victim = f"victim-sse-{tag}", f"victim-ws-{tag}"
    thirds = [f"third-{n}-{tag}" for n in range(3)]
    nonce = f"valid-{tag}-"
    rng = random.Random(SEED)
    hostile = handwritten_corpus() + random_corpus(rng, RANDOM_ITEMS)
    targets = [sse_victim, ws_victim, *thirds]
    reconnects = live.services.mux.statistics().reconnects
    internal_errors = dropped(live, "internal_error")
    too_deep = dropped(live, "too_deep")
    received = {sse_victim: Received(), ws_victim: Received()}
    third_received = {user: Received() for user in thirds}
    readiness: list[int] = []

    async with contextlib.AsyncExitStack() as stack:
        # The victims, and listeners on two of the third channels so that the multiplexer
        # hears everything sent there too.
        sse = await stack.enter_async_context(
            http.stream("GET", f"{live.url}/events", params={"token": make_token(sse_victim)})
        )
        assert sse.status_code == 200
        ws = await stack.enter_async_context(
            connect(f"{live.ws_url}/ws?token={make_token(ws_victim)}", max_size=None)
        )
        third_sse = await stack.enter_async_context(
            http.stream("GET", f"{live.url}/events", params={"token": make_token(thirds[0])})
        )
        third_ws = await stack.enter_async_context(
            connect(f"{live.ws_url}/ws?token={make_token(thirds[1])}", max_size=None)
        )
        received[ws_victim].messages.append(await ws_next(ws))
        third_received[thirds[1]].messages.append(await ws_next(third_ws))
        readers = [
            asyncio.create_task(read_sse(sse, received[sse_victim])),
            asyncio.create_task(read_ws(ws, received[ws_victim])),
            asyncio.create_task(read_sse(third_sse, third_received[thirds[0]])),
            asyncio.create_task(read_ws(third_ws, third_received[thirds[1]])),
            asyncio.create_task(poll_readiness(http, live.url, readiness)),
        ]
        try:
            await wait_connected(received[sse_victim], third_received[thirds[0]])
            expected = await publish_interleaved(redis, redis_url, hostile, targets, nonce, rng)
            expected_sse = [i for user, i in expected if user == sse_victim]
            expected_ws = [i for user, i in expected if user == ws_victim]
            await wait_until(
                lambda: (
                    any(r.ended for r in received.values())
                    or (
                        len(received[sse_victim].valid_ids(nonce)) >= len(expected_sse)
                        and len(received[ws_victim].valid_ids(nonce)) >= len(expected_ws)
                    )
                ),
                timeout=10,
            )
            await asyncio.sleep(0.2)  # anything that should not come, would by now
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    for user, expected_ids in ((sse_victim, expected_sse), (ws_victim, expected_ws)):
        got = received[user]
        assert not got.ended, f"{user}'s stream ended: {got.error}"
        assert got.valid_ids(nonce) == expected_ids  # each once, in order
        assert got.system_events() == ["connected"], got.system_events()
        # Hostile events of a registered type are forwarded, as harmless renderings only.
        assert got.others(nonce), "no hostile event reached the victim: the test is void"
        for message in got.others(nonce):
            if message.get("event") != "ping":  # the gateway's own heartbeat
                assert message.get("event") in REGISTERED_EVENT_TYPES, message
    for got in (*received.values(), *third_received.values()):
        assert not got.ended, got.error
        assert got.event_lines == []
        assert "resync" not in got.system_events()
        assert "disconnect" not in got.system_events()
    for stream in (received[sse_victim], third_received[thirds[0]]):
        assert stream.retry_lines == [stream.retry_lines[0]], stream.retry_lines
        assert int(stream.retry_lines[0]) > 1
    assert live.services.mux.statistics().reconnects == reconnects
    assert dropped(live, "internal_error") == internal_errors  # every message was judged
    assert dropped(live, "too_deep") > too_deep  # and the deep ones did reach the listener
    assert readiness, "/readyz was not polled"
    assert set(readiness) == {200}, readiness
    assert (await http.get(f"{live.url}/readyz")).status_code == 200


async def wait_connected(*streams: Received) -> None:
    await wait_until(lambda: all(s.messages for s in streams))
    for stream in streams:
        assert stream.messages[0]["event"] == "connected"


async def publish_interleaved(
    redis: aioredis.Redis,
    redis_url: str,
    hostile: list[bytes],
    targets: list[str],
    nonce: str,
    rng: random.Random,
) -> list[tuple[str, str]]:
    """Publish VALID_EVENTS valid events, alternately to the two victims, over RUN_SECONDS,
    with the hostile corpus spread between them over every target channel. Returns the
    (user, class_id) of each valid event, in publishing order."""
    victims = targets[:2]
    per_step = -(-len(hostile) // VALID_EVENTS)
    published: list[tuple[str, str]] = []
    async with EventPublisher.from_url(redis_url) as publisher:
        for n in range(VALID_EVENTS):
            user = victims[n % 2]
            class_id = f"{nonce}{n}"
            await publisher.publish(
                user, {"event": "class_created", "class_id": class_id, "class_designation": "9A"}
            )
            published.append((user, class_id))
            for payload in hostile[n * per_step : (n + 1) * per_step]:
                # Every hostile payload reaches a victim's channel, half also a third's.
                await redis.publish(user_channel(victims[rng.randrange(2)]), payload)
                if rng.random() < 0.5:
                    await redis.publish(user_channel(rng.choice(targets[2:])), payload)
            await asyncio.sleep(RUN_SECONDS / VALID_EVENTS)
    return published
