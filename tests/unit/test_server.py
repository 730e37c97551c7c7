from __future__ import annotations

import logging
import socket
import sys
import traceback

import pytest

from quart_gateway.serving.server import (
    drain_budget,
    hypercorn_config,
    listening_sockets,
    run_loop,
)
from quart_gateway.settings import Secret, Settings
from tests.support import free_port

SETTINGS = Settings(jwt_secret_key=Secret("x" * 40), heartbeat_interval_seconds=15.0, port=0)


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
@pytest.mark.parametrize(
    ("heartbeat", "expected_ms"),
    [
        (15.0, 45_000),  # silent peers are dropped after three heartbeats
        (0.5, 10_000),  # a short heartbeat does not make slow links fatal
    ],
)
def test_listening_sockets_drop_silent_peers(heartbeat: float, expected_ms: int) -> None:
    settings = Settings(
        jwt_secret_key=Secret("x" * 40), heartbeat_interval_seconds=heartbeat, port=free_port()
    )
    sockets = listening_sockets(settings)
    try:
        for sock in sockets.insecure_sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == expected_ms
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()


def test_hypercorn_settings() -> None:
    config = hypercorn_config(SETTINGS)
    assert config.websocket_ping_interval is None  # the gateway's own ping does that work
    assert config.backlog >= 1024
    assert config.websocket_max_message_size == 64 * 1024


def test_the_drain_leaves_time_for_the_rest_of_the_shutdown() -> None:
    assert drain_budget(Settings(jwt_secret_key=Secret("x"), shutdown_grace_seconds=10)) == 7.5
    assert drain_budget(Settings(jwt_secret_key=Secret("x"), shutdown_grace_seconds=1)) == 0.2


@pytest.mark.parametrize("uvloop_installed", [True, False])
def test_a_worker_traceback_does_not_begin_with_the_uvloop_import(
    monkeypatch: pytest.MonkeyPatch, uvloop_installed: bool
) -> None:
    if not uvloop_installed:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError

    async def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError) as caught:
        run_loop(failing())
    assert caught.value.__context__ is None
    assert "No module named" not in "".join(traceback.format_exception(caught.value))


def test_a_replacement_can_bind_the_port_while_the_old_process_still_listens() -> None:
    settings = Settings(jwt_secret_key=Secret("x" * 40), port=free_port())
    old = listening_sockets(settings)
    try:
        new = listening_sockets(settings)  # a deploy starts the new process first
        for sock in new.insecure_sockets:
            sock.close()
    finally:
        for sock in old.insecure_sockets:
            sock.close()


async def test_accepted_streams_stay_out_of_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = hypercorn_config(Settings(jwt_secret_key=Secret("x" * 40)))

    def scope(path: str) -> dict[str, object]:
        return {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }

    def response(status: int) -> dict[str, object]:
        return {"status": status, "headers": []}

    with caplog.at_level(logging.INFO, logger="hypercorn.access"):
        for path, status in (("/events", 200), ("/ws", 101), ("/v1/batches/b1/status", 200)):
            await config.log.access(scope(path), response(status), 0.01)  # type: ignore[arg-type]
        await config.log.access(scope("/events"), response(401), 0.01)  # type: ignore[arg-type]
    lines = [r.getMessage().split('"')[1] for r in caplog.records]
    assert lines == ["GET /v1/batches/b1/status 1.1", "GET /events 1.1"]


def test_hypercorn_waits_for_the_drain_after_closing_the_listener() -> None:
    settings = Settings(jwt_secret_key=Secret("x" * 40), shutdown_grace_seconds=10)
    assert hypercorn_config(settings).graceful_timeout == drain_budget(settings) == 7.5
