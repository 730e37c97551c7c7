"""MAX_CONNECTIONS_PER_USER across every worker and host, with leases in Redis.

Each open stream holds a lease: a member of the sorted set `conn-leases:{user}` scored with its
expiry. A crashed worker's leases lapse after LEASE_TTL_MS; live workers renew theirs.

Every lease operation (take, give back, renew) goes through one queue that a single task
drains into one Lua call per batch: a burst of a thousand new connections costs a handful of
round trips on one Redis connection, not a thousand calls on a thousand. If Redis cannot be
reached, a new stream is allowed (fail open) and counted, as streams keep working from what is
already subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from contextlib import suppress
from typing import Literal

from quart_gateway.aio.concurrency import current_task_cancelling
from quart_gateway.aio.supervisor import TaskSupervisor
from quart_gateway.ops.metrics import Metrics
from quart_gateway.redis_kinds import REDIS_FAILURES, RedisClient, key_space, per_slot

logger = logging.getLogger(__name__)

LEASE_TTL_MS = 60_000
BATCH_LIMIT = 1000  # operations per Lua call

# ARGV[1] = ttl ms, ARGV[2] = limit; then per KEYS[k]: ARGV[1+2k] = op, ARGV[2+2k] = member.
# op: "take" (1 = granted, 0 = at the limit), "give" (remove), "keep" (renew; re-adds it).
_LEASES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for k = 1, #KEYS do
  local key, op, member = KEYS[k], ARGV[1 + 2 * k], ARGV[2 + 2 * k]
  out[k] = 1
  if op == 'give' then
    redis.call('ZREM', key, member)
  else
    if op == 'take' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      if redis.call('ZCARD', key) >= limit then out[k] = 0 end
    end
    if out[k] == 1 then
      redis.call('ZADD', key, now + ttl, member)
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return out
"""

Op = Literal["take", "give", "keep"]


KEY_PREFIX = "conn-leases:"


class ConnectionLimiter:
    def __init__(self, client: RedisClient, limit: int, metrics: Metrics) -> None:
        self._client = client
        self._keys = key_space(client)
        self._limit = limit
        self._metrics = metrics
        self._script = client.register_script(_LEASES)
        self._local: defaultdict[str, set[str]] = defaultdict(set)
        self._queue: list[tuple[Op, str, str, asyncio.Future[bool] | None]] = []
        self._wakeup = asyncio.Event()

    def start(self, tasks: TaskSupervisor) -> None:
        """Run the flusher and the renewal loop under the worker's supervisor."""
        tasks.start("connection-leases", self._flush_forever)
        tasks.start("connection-lease-renewal", self._renew_forever)

    async def stop(self) -> None:
        """Give back what is still queued (the supervisor has stopped the loops)."""
        with suppress(*REDIS_FAILURES):
            async with asyncio.timeout(0.5):
                await self._flush()

    async def acquire(self, user_id: str, member: str) -> bool:
        """Take a lease in Redis; False at the limit. `hold()` it once the stream is open.

        A lease that is never held (the client left before its stream started) is not renewed
        and lapses by itself after LEASE_TTL_MS.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue("take", user_id, member, future)
        try:
            async with asyncio.timeout(2.0):
                return await future
        except TimeoutError:
            # Counted by the batch that fails, if it fails; a slow batch is only logged.
            logger.warning("connection limit not answered in time: allowing the stream")
            return True

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
        self._enqueue("give", user_id, member, None)

    def _enqueue(
        self, op: Op, user_id: str, member: str, future: asyncio.Future[bool] | None
    ) -> None:
        self._queue.append((op, user_id, member, future))
        self._wakeup.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._flush()
            except REDIS_FAILURES as exc:
                if current_task_cancelling():
                    raise asyncio.CancelledError from exc  # asyncio.timeout swallowed our cancel
                logger.warning("connection leases unavailable: %s", type(exc).__name__)
            except Exception:
                # Not Redis being away: a bug or an input nobody foresaw. The batch has been
                # settled (fail open); the flusher goes on for every other stream.
                self._metrics.task_failures.labels(task="connection-leases").inc()
                logger.exception("connection lease batch failed; continuing")

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:BATCH_LIMIT], self._queue[BATCH_LIMIT:]
            try:
                async with asyncio.timeout(5.0):
                    verdicts = await self._run(batch)
            except Exception:
                verdicts = [1] * len(batch)  # fail open; given-back leases lapse by themselves
                if any(op == "take" for op, _, _, _ in batch):
                    self._failed_open("redis")
                else:
                    self._metrics.redis_errors.labels(operation="connection_lease").inc()
                self._settle(batch, verdicts)
                raise
            self._settle(batch, verdicts)

    async def _run(
        self, batch: list[tuple[Op, str, str, asyncio.Future[bool] | None]]
    ) -> list[int]:
        """One Lua call for the batch (in a cluster, one per slot: a user's leases are one key)."""
        keys = [self._keys.user_key(KEY_PREFIX, user) for _, user, _, _ in batch]

        async def call(indices: list[int]) -> list[int]:
            result: list[int] = await self._script(
                keys=[keys[i] for i in indices],
                args=[
                    LEASE_TTL_MS,
                    self._limit,
                    *(x for i in indices for x in (batch[i][0], batch[i][2])),
                ],
            )
            return result

        return await per_slot(self._client, keys, call)

    def _settle(
        self, batch: list[tuple[Op, str, str, asyncio.Future[bool] | None]], verdicts: list[int]
    ) -> None:
        for (_, user_id, member, future), verdict in zip(batch, verdicts, strict=True):
            if future is None:
                continue
            if future.done():  # the caller timed out or left: don't keep a lease nobody holds
                if verdict and member not in self._local.get(user_id, ()):
                    self._enqueue("give", user_id, member, None)
                continue
            future.set_result(bool(int(verdict)))

    def _failed_open(self, why: str) -> None:
        self._metrics.redis_errors.labels(operation="connection_lease").inc()
        logger.warning("connection limit unavailable (%s): allowing the stream", why)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_MS / 3000)
            # Renewals still queued (Redis has been away) are replaced, not added to: the queue
            # stays bounded by the leases held, however long an outage lasts.
            self._queue = [entry for entry in self._queue if entry[0] != "keep"]
            for user_id, members in self._local.items():
                for member in members:
                    self._queue.append(("keep", user_id, member, None))
            self._wakeup.set()
