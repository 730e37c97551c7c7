"""HistoryReader against a Redis it cannot reach: a gateway error, not a redis-py one."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from quart_gateway.live.history import HistoryReader, HistoryUnavailableError
from tests.support import free_port


async def test_an_unreachable_redis_is_history_unavailable() -> None:
    # Nothing listens on that port; one attempt, no retries.
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(HistoryUnavailableError, match="ConnectionError") as raised:
            await HistoryReader(client).since("user-1", "1-0")
    finally:
        await client.aclose()
    assert isinstance(raised.value.__cause__, OSError | aioredis.RedisError)
