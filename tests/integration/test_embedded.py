from __future__ import annotations

import pytest

from quart_gateway.serving.embedded import EmbeddedRedis, EmbeddedServerError


def test_a_second_server_on_the_same_path_is_refused(tmp_path: object) -> None:
    first = EmbeddedRedis(directory=str(tmp_path))
    first.start()
    try:
        with pytest.raises(EmbeddedServerError, match="already runs"):
            EmbeddedRedis(directory=str(tmp_path)).start()
    finally:
        first.cleanup()


def test_a_stale_socket_file_does_not_block_a_start(tmp_path: object) -> None:
    server = EmbeddedRedis(directory=str(tmp_path))
    server.start()
    server.kill()  # leaves the socket file behind, as a crash would
    again = EmbeddedRedis(directory=str(tmp_path))
    again.start()
    again.cleanup()
