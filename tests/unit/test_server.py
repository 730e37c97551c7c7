from __future__ import annotations

import socket

import pytest

from quart_gateway.server import drain_budget, hypercorn_config, tune_sockets
from quart_gateway.settings import Secret, Settings

SETTINGS = Settings(jwt_secret_key=Secret("x" * 40), heartbeat_interval_seconds=15.0, port=0)


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
def test_listening_sockets_drop_silent_peers_after_three_heartbeats() -> None:
    config = hypercorn_config(SETTINGS)
    config.bind = ["127.0.0.1:0"]
    sockets = config.create_sockets()
    try:
        tune_sockets(sockets, SETTINGS)
        for sock in sockets.insecure_sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 45_000
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


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
def test_a_short_heartbeat_does_not_make_slow_links_fatal() -> None:
    settings = Settings(jwt_secret_key=Secret("x" * 40), heartbeat_interval_seconds=0.5, port=0)
    config = hypercorn_config(settings)
    config.bind = ["127.0.0.1:0"]
    sockets = config.create_sockets()
    try:
        tune_sockets(sockets, settings)
        for sock in sockets.insecure_sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10_000
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()
