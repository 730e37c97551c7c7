from __future__ import annotations

from pathlib import Path

import pytest
import redis

from quart_gateway.serving.embedded import EmbeddedRedis, EmbeddedServerError


def test_a_second_server_on_the_same_path_is_refused(tmp_path: object) -> None:
    first = EmbeddedRedis(directory=str(tmp_path))
    first.start()
    try:
        with pytest.raises(EmbeddedServerError, match="already runs"):
            EmbeddedRedis(directory=str(tmp_path)).start()
    finally:
        first.cleanup()


def test_a_stale_socket_file_does_not_block_a_start(tmp_path: Path) -> None:
    server = EmbeddedRedis(directory=str(tmp_path))
    server.start()
    server.kill()  # leaves the socket file behind, as a crash would
    assert Path(server.socket_path).exists()
    again = EmbeddedRedis(directory=str(tmp_path))
    try:
        url = again.start()
        assert url == f"unix://{server.socket_path}?db=0"
        with redis.Redis.from_url(url) as client:
            assert client.ping()
            assert client.info("server")["process_id"] == again.pid
    finally:
        again.cleanup()
