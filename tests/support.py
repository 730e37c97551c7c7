"""Test support: tokens, upstream stand-ins, stream clients, a fault-injecting TCP proxy and
publishing. The servers themselves (Redis, the gateway) are in `tests/servers.py`."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from publishers import EventPublisher, FileServicePublisher

SECRET = "test-secret-key-that-is-long-enough-for-hs256-and-even-hs512-ok!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_token(
    sub: str | None = "user-1",
    *,
    expires_in: float = 300,
    key: Any = SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, key, algorithm=algorithm)


# --- upstream stand-ins ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    raw: bytes | None = None  # sent as-is instead of JSON


@dataclass
class Upstream:
    """A real HTTP server on loopback answering from a programmable route table."""

    routes: dict[str, Reply] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, path: str, reply: Reply) -> None:
        self.routes[path] = reply

    def headers_of(self, path: str) -> dict[str, str]:
        for seen, headers in reversed(self.requests):
            if seen == path:
                return headers
        raise AssertionError(f"{path} was not requested; saw {[p for p, _ in self.requests]}")


def start_upstream() -> tuple[Upstream, ThreadingHTTPServer]:
    upstream = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            upstream.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            reply = upstream.routes.get(self.path, Reply(404, {"detail": "not found"}))
            if reply.delay:
                time.sleep(reply.delay)
            data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    upstream.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return upstream, server


# --- stream clients ----------------------------------------------------------------------------


@dataclass
class SseEvent:
    data: dict[str, Any]
    id: str | None
    retry: int | None


class SseClient:
    """A minimal EventSource over httpx: parses frames, exposes comments and retry too."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []
        self.retry: int | None = None
        self.ended = False

    async def next(self, timeout: float = 5.0) -> SseEvent:
        async with asyncio.timeout(timeout):
            data: list[str] = []
            event_id: str | None = None
            retry: int | None = None
            while True:
                try:
                    line = await anext(self._lines)
                except StopAsyncIteration:
                    self.ended = True
                    raise EOFError("stream ended") from None
                if line == "":
                    if data:
                        return SseEvent(json.loads("\n".join(data)), event_id, retry)
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value
                elif name == "retry":
                    retry = self.retry = int(value)
                elif name == "event":
                    raise AssertionError("the gateway must not send an `event:` field")

    async def next_domain(self, timeout: float = 5.0) -> SseEvent:
        """The next message that is not a heartbeat."""
        while True:
            event = await self.next(timeout)
            if event.data.get("event") != "ping":
                return event

    async def until_end(self, timeout: float = 5.0) -> list[SseEvent]:
        events = []
        try:
            while True:
                events.append(await self.next(timeout))
        except EOFError:
            return events


@asynccontextmanager
async def sse_and_ws(
    http: httpx.AsyncClient, url: str, ws_url: str, user_id: str
) -> AsyncIterator[tuple[SseClient, Any]]:
    """One SSE and one WebSocket stream of `user_id`, each past its `connected` message."""
    from websockets.asyncio.client import connect

    token = make_token(user_id)
    async with http.stream("GET", f"{url}/events", params={"token": token}) as response:
        sse = SseClient(response)
        assert (await sse.next()).data["event"] == "connected"
        async with connect(f"{ws_url}/ws?token={token}") as conn:
            assert (await ws_next(conn))["event"] == "connected"
            yield sse, conn


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


# --- websocket helpers ------------------------------------------------------------------------


async def ws_next(ws: Any, timeout: float = 5.0, *, skip_pings: bool = True) -> dict[str, Any]:
    """The next JSON message (heartbeats skipped unless asked for)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if not (skip_pings and message.get("event") == "ping"):
                return message  # type: ignore[no-any-return]


async def ws_close_of(ws: Any, timeout: float = 5.0) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes; return (code, reason, messages read meanwhile)."""
    from websockets.exceptions import ConnectionClosed

    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                messages.append(json.loads(await ws.recv()))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason, messages


# --- fault injection ---------------------------------------------------------------------------


# How Redis (RESP2) starts each message it pushes to a subscriber.
PUBSUB_MESSAGE = b"*3\r\n$7\r\nmessage\r\n"


class TcpProxy:
    """A loopback TCP proxy in front of a server (Redis, or the gateway), to pause, freeze or
    cut the connections it carries, as a half-open or broken link would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # accepted so far
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._gates: list[asyncio.Event] = []
        self._deaf: list[asyncio.Event] = []
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """The proxy as a Redis URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def http_url(self) -> str:
        """The proxy as an HTTP origin."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        gate = asyncio.Event()  # this connection's own: cleared by freeze()
        gate.set()
        self._gates.append(gate)
        deaf = asyncio.Event()  # this connection's own: set by deafen()
        self._deaf.append(deaf)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            try:
                while data := await src.read(65536):
                    # Paused or frozen: deliver nothing, a silent peer.
                    await self._flowing.wait()
                    await gate.wait()
                    if down and deaf.is_set() and data.startswith(PUBSUB_MESSAGE):
                        continue  # deaf: pushed messages vanish, replies still flow
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def pause(self) -> None:
        """Stop forwarding on every connection, present and future, until `resume()`."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def freeze(self) -> None:
        """Stop forwarding on the connections open now, for good: they stay open but silent.
        Connections opened later flow normally."""
        for gate in self._gates:
            gate.clear()

    def deafen(self) -> None:
        """On the connections open now, drop the pub/sub messages Redis pushes, and only
        those: a subscriber that answers PING but no longer receives (lost subscriptions)."""
        for deaf in self._deaf:
            deaf.set()

    def cut(self) -> None:
        """Close every proxied connection abruptly; new ones are still accepted."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        self._flowing.set()
        for gate in self._gates:
            gate.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def unreachable_redis() -> aioredis.Redis:
    """A client of a port nothing listens on: every command fails at once, without retries."""
    return aioredis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


# --- publishing --------------------------------------------------------------------------------


async def publish(redis_url: str, user_id: str, count: int, start: int) -> list[str]:
    """Publish `count` file-added events one after the other; their ids, in order."""
    async with EventPublisher.from_url(redis_url) as publisher:
        files = FileServicePublisher(publisher)
        return [
            await files.publish_file_added_event("b-1", f"essay-{n}", f"essay-{n}.docx", user_id)
            for n in range(start, start + count)
        ]
