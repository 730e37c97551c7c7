"""MAX_CONNECTIONS_PER_USER across every worker and host, with leases in Redis.

Each open stream holds a lease: a member of the sorted set `conn-leases:{user}` scored with its
expiry. A crashed worker's leases lapse after LEASE_TTL; live workers renew theirs in one
pipeline per period. If Redis cannot be reached, the connection is allowed (fail open) and
counted, as the streams themselves keep working from what is already subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from contextlib import suppress

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from quart_gateway.metrics import Metrics

logger = logging.getLogger(__name__)

LEASE_TTL_MS = 60_000

# KEYS[1] = lease set; ARGV = ttl ms, max, member. 1 = acquired, 0 = at the limit.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
# KEYS = lease sets; ARGV[1] = ttl ms, then per key: a count n and n members.
_RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('ZADD', KEYS[k], expiry, ARGV[i]); i = i + 1
  end
  redis.call('PEXPIRE', KEYS[k], ARGV[1])
end
return 1
"""


def _key(user_id: str) -> str:
    return f"conn-leases:{user_id}"


class ConnectionLimiter:
    def __init__(self, client: aioredis.Redis, limit: int, metrics: Metrics) -> None:
        self._client = client
        self._limit = limit
        self._metrics = metrics
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._local: defaultdict[str, set[str]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # A release must not race a renewal that still carries its member (and re-adds it).
        self._renewing = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name="connection-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)

    async def acquire(self, user_id: str, member: str) -> bool:
        """Take a lease in Redis; False at the limit. `hold()` it once the stream is open.

        A lease that is never held (the client left before its stream started) is not renewed
        and lapses by itself after LEASE_TTL_MS.
        """
        try:
            async with asyncio.timeout(1.0):
                granted = await self._acquire(
                    keys=[_key(user_id)], args=[LEASE_TTL_MS, self._limit, member]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._metrics.redis_errors.labels(operation="connection_lease").inc()
            logger.warning("connection limit unavailable, allowing: %s", type(exc).__name__)
            return True
        return bool(int(granted))

    def hold(self, user_id: str, member: str) -> None:
        """Renew this lease for as long as the stream lives."""
        self._local[user_id].add(member)

    def release(self, user_id: str, member: str) -> None:
        """Give the lease back. Sync, so it also runs in a cancelled handler's cleanup."""
        members = self._local.get(user_id)
        if members is not None:
            members.discard(member)
            if not members:
                del self._local[user_id]
        task = asyncio.get_running_loop().create_task(self._remove(user_id, member))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _remove(self, user_id: str, member: str) -> None:
        try:
            async with asyncio.timeout(6.0), self._renewing:
                await self._client.zrem(_key(user_id), member)
        except (RedisError, OSError, TimeoutError):
            self._metrics.redis_errors.labels(operation="connection_lease").inc()
            # The lease lapses by itself after LEASE_TTL_MS.

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_MS / 3000)
            if not self._local:
                continue
            keys: list[str] = []
            args: list[str | int] = [LEASE_TTL_MS]
            for user_id, members in self._local.items():
                keys.append(_key(user_id))
                args.append(len(members))
                args.extend(members)
            try:
                async with asyncio.timeout(5.0), self._renewing:
                    await self._renew(keys=keys, args=args)
            except (RedisError, OSError, TimeoutError) as exc:
                self._metrics.redis_errors.labels(operation="connection_lease").inc()
                logger.warning("could not renew connection leases: %s", type(exc).__name__)
