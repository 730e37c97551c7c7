"""The gateway as a real process: `python -m quart_gateway`, as the Procfile runs it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from quart_gateway.serving.embedded import EmbeddedRedis, default_directory
from tests.servers import ProcessFactory
from tests.support import (
    SECRET,
    SseClient,
    free_port,
    make_token,
    sse_and_ws,
    wait_until,
    ws_close_of,
    ws_next,
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_embedded_mode_runs_end_to_end_without_redis_url(
    gateway_process: ProcessFactory, http: httpx.AsyncClient, user_id: str
) -> None:
    port = free_port()
    gateway = await gateway_process({}, port=port)
    socket_path = Path(default_directory(port)) / "redis.sock"
    assert socket_path.exists()
    assert str(socket_path) in gateway.logs()  # the log says where to publish
    async with http.stream(
        "GET", f"{gateway.url}/events", params={"token": make_token(user_id)}
    ) as response:
        client = SseClient(response)
        assert (await client.next()).data["event"] == "connected"
        redis = aioredis.Redis(unix_socket_path=str(socket_path))
        try:
            assert (
                await redis.publish(
                    f"ws:{user_id}",
                    '{"event":"class_created","class_id":"c","class_designation":"9A"}',
                )
                == 1
            )
        finally:
            await redis.aclose()
        assert (await client.next_domain()).data["class_id"] == "c"
    gateway.terminate()
    assert gateway.wait(15) == 0
    assert not socket_path.exists()  # the private server went with the gateway


async def test_tokens_never_reach_the_logs(
    gateway_process: ProcessFactory, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process({"REDIS_URL": redis_url, "LOG_LEVEL": "DEBUG"})
    token = make_token(user_id)
    bad = make_token(user_id, expires_in=-10)
    await http.get(
        f"{gateway.url}/v1/batches/b1/status", headers={"Authorization": f"Bearer {token}"}
    )
    await http.get(f"{gateway.url}/v1/batches/b1/status?token={token}")
    await http.get(f"{gateway.url}/events", params={"token": bad})
    async with http.stream(
        "GET", f"{gateway.url}/events", params={"token": token, "ticket": "T-secret"}
    ) as response:
        assert response.status_code == 401  # an unknown ticket: a ticket wins over ?token=
    async with connect(f"{gateway.ws_url}/ws?token={token}") as conn:
        await ws_next(conn)
    async with connect(f"{gateway.ws_url}/ws?token={bad}") as conn:
        await ws_close_of(conn)
    gateway.terminate()
    gateway.wait(15)
    logs = gateway.logs()
    assert "GET /events" in logs  # the access log is there (refused streams)...
    for secret in (token, bad, token.split(".")[2], "T-secret"):
        assert secret not in logs  # ...without the credentials
    for line in logs.splitlines():
        if line.startswith("{"):
            json.loads(line)  # one JSON object per line


async def test_stream_tickets_never_reach_the_logs(
    gateway_process: ProcessFactory, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process({"REDIS_URL": redis_url, "LOG_LEVEL": "DEBUG"})
    token = make_token(user_id)
    tickets = []
    for _ in range(3):
        response = await http.post(
            f"{gateway.url}/v1/stream-tickets", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201
        tickets.append(response.json()["ticket"])
    sse_ticket, ws_ticket, unused = tickets
    async with http.stream("GET", f"{gateway.url}/events?ticket={sse_ticket}") as response:
        await SseClient(response).next()
    spent = await http.get(f"{gateway.url}/events?ticket={sse_ticket}")  # refused: logged
    assert spent.status_code == 401
    async with connect(f"{gateway.ws_url}/ws?ticket={ws_ticket}&last_event_id=1-0") as conn:
        await ws_next(conn)
    async with connect(f"{gateway.ws_url}/ws?ticket={ws_ticket}") as conn:
        await ws_close_of(conn)
    gateway.terminate()
    gateway.wait(15)
    logs = gateway.logs()
    assert "POST /v1/stream-tickets" in logs
    assert "GET /events" in logs  # the access log is there (refused streams)...
    assert "stream refused" in logs
    for secret in (*tickets, token, token.split(".")[2], unused):
        assert secret not in logs  # ...without the credentials


async def test_sigterm_closes_streams_cleanly_and_exits_in_time(
    gateway_process: ProcessFactory, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process({"REDIS_URL": redis_url, "SHUTDOWN_GRACE_SECONDS": "5"})
    async with sse_and_ws(http, gateway.url, gateway.ws_url, user_id) as (sse, conn):
        started = time.monotonic()
        gateway.terminate()
        code, reason, _ = await ws_close_of(conn)
        events = await sse.until_end()
    assert (code, reason) == (1012, "server_restart")
    farewell = events[-1]
    assert farewell.data["event"] == "disconnect"
    assert farewell.data["code"] == 1012
    assert farewell.retry is not None  # jittered reconnect hint
    assert sse.ended  # a clean end of the chunked body, not a reset
    assert gateway.wait(10) == 0
    assert time.monotonic() - started < 5 + 2
    assert '"level": "ERROR"' not in gateway.logs()  # a clean restart is not an error


async def test_sigterm_with_several_workers(
    gateway_process: ProcessFactory, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process(
        {"REDIS_URL": redis_url, "WEB_CONCURRENCY": "2", "SHUTDOWN_GRACE_SECONDS": "5"}
    )
    sockets = []
    for _ in range(4):
        conn = await connect(f"{gateway.ws_url}/ws?token={make_token(user_id)}")
        assert (await ws_next(conn))["event"] == "connected"
        sockets.append(conn)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        # Each worker has its own multiplexer: as many subscriptions as workers in use.
        assert 1 <= (await redis.pubsub_numsub(f"ws:{user_id}"))[0][1] <= 2
        await redis.publish(
            f"ws:{user_id}", '{"event":"class_updated","class_id":"c","class_designation":"x"}'
        )
        for conn in sockets:
            assert (await ws_next(conn))["event"] == "class_updated"
    finally:
        await redis.aclose()
    gateway.terminate()
    for conn in sockets:
        code, _, _ = await ws_close_of(conn)
        assert code == 1012
    assert gateway.wait(10) == 0


async def test_redis_restart_under_open_streams(
    gateway_process: ProcessFactory,
    http: httpx.AsyncClient,
    private_redis: EmbeddedRedis,
    user_id: str,
) -> None:
    gateway = await gateway_process({"REDIS_URL": private_redis.url})
    channel = f"ws:{user_id}"
    async with sse_and_ws(http, gateway.url, gateway.ws_url, user_id) as (sse, conn):
        private_redis.kill()

        async def not_ready() -> bool:
            return (await http.get(f"{gateway.url}/readyz")).status_code == 503

        await wait_until(not_ready, timeout=20)
        private_redis.start()

        async def ready() -> bool:
            return (await http.get(f"{gateway.url}/readyz")).status_code == 200

        await wait_until(ready, timeout=20)
        # Both streams stayed open and are told to re-hydrate, then get new events.
        assert (await sse.next_domain(timeout=10)).data["reason"] == "redis_reconnected"
        assert (await ws_next(conn, timeout=10))["event"] == "resync"
        redis = aioredis.Redis.from_url(private_redis.url)
        try:
            await redis.publish(
                channel, '{"event":"class_created","class_id":"after","class_designation":"x"}'
            )
        finally:
            await redis.aclose()
        assert (await sse.next_domain()).data["class_id"] == "after"
        assert (await ws_next(conn))["class_id"] == "after"
    metrics = (await http.get(f"{gateway.url}/metrics")).text
    assert "gateway_redis_reconnects_total 0.0" not in metrics


async def test_a_client_that_never_reads_is_cut_and_memory_stays_bounded(
    gateway_process: ProcessFactory, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process({"REDIS_URL": redis_url})
    stalled_user, healthy_user = f"{user_id}-stalled", f"{user_id}-healthy"
    # A raw client that sends its request and then never reads a byte.
    stalled = socket.create_connection(("127.0.0.1", gateway.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(
        f"GET /events?token={make_token(stalled_user)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await wait_until(lambda: _numsub(redis, f"ws:{stalled_user}"))
        async with http.stream(
            "GET", f"{gateway.url}/events", params={"token": make_token(healthy_user)}
        ) as response:
            healthy = SseClient(response)
            assert (await healthy.next()).data["event"] == "connected"
            before = rss_kib(gateway.process.pid)
            chunk = json.dumps(
                {"event": "class_updated", "class_id": "x", "class_designation": "p" * 65_000}
            )
            latencies = []
            for i in range(1600):  # 1600 x 64 KiB = 100 MiB offered to the stalled client
                await redis.publish(f"ws:{stalled_user}", chunk)
                if i % 200 == 0:
                    sent = time.monotonic()
                    await redis.publish(
                        f"ws:{healthy_user}",
                        json.dumps(
                            {
                                "event": "class_created",
                                "class_id": str(i),
                                "class_designation": "probe",
                            }
                        ),
                    )
                    assert (await healthy.next_domain(timeout=10)).data["class_id"] == str(i)
                    latencies.append(time.monotonic() - sent)
            after = rss_kib(gateway.process.pid)
    finally:
        await redis.aclose()
        stalled.close()
    metrics = (await http.get(f"{gateway.url}/metrics")).text
    assert "gateway_slow_consumer_disconnects_total 1.0" in metrics
    assert after - before < 64 * 1024, f"RSS grew {after - before} KiB"
    assert max(latencies) < 2.0, latencies


async def _numsub(redis: aioredis.Redis, channel: str) -> bool:
    return bool((await redis.pubsub_numsub(channel))[0][1])


async def test_bad_configuration_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quart_gateway",
        env={"PATH": os.environ["PATH"], "PORT": "not-a-port", "JWT_SECRET_KEY": "x" * 40},
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"PORT" in stderr


async def test_sigterm_exits_in_time_with_a_client_that_stopped_reading(
    gateway_process: ProcessFactory, redis_url: str, user_id: str
) -> None:
    gateway = await gateway_process({"REDIS_URL": redis_url, "SHUTDOWN_GRACE_SECONDS": "3"})
    stalled = socket.create_connection(("127.0.0.1", gateway.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    handshake = (
        f"GET /ws?token={make_token(user_id)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    stalled.sendall(handshake.encode())
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await wait_until(lambda: _numsub(redis, f"ws:{user_id}"))
        chunk = json.dumps(
            {"event": "class_updated", "class_id": "x", "class_designation": "p" * 60_000}
        )
        for _ in range(8):  # enough to fill the socket buffers, not the queue
            await redis.publish(f"ws:{user_id}", chunk)
    finally:
        await redis.aclose()
    await asyncio.sleep(0.3)
    started = time.monotonic()
    gateway.terminate()
    gateway.wait(3 + 3)
    assert time.monotonic() - started < 3 + 2
    stalled.close()


async def test_any_asgi_server_can_serve_the_app_factory(
    tmp_path: Path, http: httpx.AsyncClient, redis_url: str, user_id: str
) -> None:
    """`hypercorn 'quart_gateway.app:create_app()'` reads the environment and serves it all."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "JWT_SECRET_KEY": SECRET, "REDIS_URL": redis_url}
    log = (tmp_path / "hypercorn.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hypercorn", "quart_gateway.app:create_app()"),
        *("--bind", f"127.0.0.1:{port}"),
        env=env, stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:

        async def ready() -> bool:
            try:
                return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=20)
        async with http.stream(
            "GET", f"http://127.0.0.1:{port}/events", params={"token": make_token(user_id)}
        ) as response:
            sse = SseClient(response)
            assert (await sse.next()).data["event"] == "connected"
            redis = aioredis.Redis.from_url(redis_url)
            await redis.publish(
                f"ws:{user_id}", '{"event":"class_created","class_id":"c","class_designation":"x"}'
            )
            await redis.aclose()
            assert (await sse.next_domain()).data["class_id"] == "c"
        async with connect(f"ws://127.0.0.1:{port}/ws?token={make_token(user_id)}") as conn:
            assert (await ws_next(conn))["event"] == "connected"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
        log.close()
