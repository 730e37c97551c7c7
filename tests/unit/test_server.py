from __future__ import annotations

import socket
import sys
import traceback

import pytest

from quart_gateway.serving.server import drain_budget, hypercorn_config, run_loop, tune_sockets
from quart_gateway.settings import Secret, Settings

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
    settings = Settings(jwt_secret_key=Secret("x" * 40), heartbeat_interval_seconds=heartbeat)
    config = hypercorn_config(settings)
    config.bind = ["127.0.0.1:0"]
    sockets = config.create_sockets()
    try:
        tune_sockets(sockets, settings)
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
