"""Per-user fixed-window rate limit kept in Redis, so it holds across workers and hosts.

If Redis cannot be reached the request is allowed (fail open), logged and counted: the status
endpoint is a read path, and refusing every user because the limiter's store is down would turn
a Redis outage into a full outage of hydration.
"""

from __future__ import annotations

import asyncio
import logging

from quart_gateway.errors import RateLimitedError
from quart_gateway.ops.metrics import Metrics
from quart_gateway.redis_kinds import REDIS_FAILURES, RedisClient, key_space
from quart_gateway.settings import RateLimit

logger = logging.getLogger(__name__)

# KEYS[1] = counter; ARGV[1] = window in ms. Returns {count, ms left in the window}.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


class RateLimiter:
    def __init__(
        self, client: RedisClient, rate: RateLimit, metrics: Metrics, *, scope: str
    ) -> None:
        self._rate = rate
        self._metrics = metrics
        self._keys = key_space(client)
        self._prefix = f"ratelimit:{scope}:"
        self._script = client.register_script(_HIT)

    async def hit(self, user_id: str) -> None:
        """Count one request; raise RateLimitedError (with Retry-After) past the limit."""
        try:
            async with asyncio.timeout(1.0):
                count, ttl_ms = await self._script(
                    keys=[self._keys.user_key(self._prefix, user_id)],
                    args=[self._rate.period_s * 1000],
                )
        except REDIS_FAILURES as exc:
            self._metrics.redis_errors.labels(operation="rate_limit").inc()
            logger.warning("rate limit unavailable, allowing the request: %s", type(exc).__name__)
            return
        if int(count) > self._rate.limit:
            self._metrics.rate_limited.inc()
            raise RateLimitedError(retry_after=-(-int(ttl_ms) // 1000))
