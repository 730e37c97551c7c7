"""Resume: read what a reconnecting client missed from its user's history stream.

The publishers append every event to a Redis Stream (`events.channels.history_key`) capped by
length and age. A client that comes back with the id of the last event it saw gets the entries
after it if that entry is still in the stream: trimming removes the oldest entries first, so
while the client's last entry is kept, every entry after it is kept too. Otherwise (trimmed,
expired, or an id this stream never issued) the client gets `resync` and re-hydrates.

Redis stays behind `HistoryReader`: a failed read is a `HistoryUnavailableError`, so the stream
code (`live.stream.frames`) handles an error of the gateway's own and is tested with a fake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from redis.exceptions import ResponseError

from events.channels import (
    HISTORY_FIELD,
    MARKER_FIELD,
    parse_stream_id,
    splice_id,
)
from quart_gateway.aio.batching import Batcher
from quart_gateway.live.wire import DropReason, Frame, decode_message
from quart_gateway.redis_kinds import REDIS_FAILURES, RedisClient, key_space, per_slot

logger = logging.getLogger(__name__)

MAX_REPLAY = 10_000
RETRY_DELAY_SECONDS = 0.1

T = TypeVar("T")

BATCH_LIMIT = 50  # resumes per Lua call
CURSOR_BATCH_LIMIT = 500  # new connections' cursors per Lua call

# One call reads for many reconnecting clients. ARGV[1] = max entries; for each KEYS[k] (a
# stream), ARGV[k + 1] = the last id its client saw. Per stream: {0} if that entry is gone (or
# never existed), else {1, entries after it}.
_READ = """
local out = {}
for k = 1, #KEYS do
  local last = ARGV[k + 1]
  if #redis.call('XRANGE', KEYS[k], last, last) == 0 then
    out[k] = {0}
  else
    out[k] = {1, redis.call('XRANGE', KEYS[k], '(' .. last, '+', 'COUNT', ARGV[1])}
  end
end
return out
"""


# One call gives many new connections their cursor. ARGV[1] = marker lifetime in ms. Per
# stream: the id of its newest entry. An empty or missing stream first gets a marker entry
# (field MARKER_FIELD, not an event), so that every cursor names an entry that exists and the
# resume rule (the client's entry is still there) holds for it too.
_CURSOR = f"""
local out = {{}}
for k = 1, #KEYS do
  local newest = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
  if #newest == 0 then
    out[k] = redis.call('XADD', KEYS[k], '*', '{MARKER_FIELD}', '')
    redis.call('PEXPIRE', KEYS[k], ARGV[1])
  else
    out[k] = newest[1][1]
  end
end
return out
"""

# How long a marker keeps an otherwise empty history alive: the publishers' default history age.
MARKER_TTL_MS = 86_400_000


class HistoryUnavailableError(Exception):
    """The history could not be read (Redis down, slow or refusing): the client re-hydrates."""


@dataclass(frozen=True, slots=True)
class Replay:
    frames: list[Frame]
    # None: the replay is complete. Otherwise why the client must re-hydrate instead.
    gap: Literal["unknown_id", "trimmed", None] = None


class HistoryReader:
    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._keys = key_space(client)
        self._script = client.register_script(_READ)
        self._cursor_script = client.register_script(_CURSOR)
        self._cursors: Batcher[str, Any] = Batcher(self._read_cursors, limit=CURSOR_BATCH_LIMIT)
        self._batcher: Batcher[tuple[str, str], Any] = Batcher(
            self._read, limit=BATCH_LIMIT, isolate=(ResponseError,)
        )

    async def since(self, user_id: str, last_id: str) -> Replay:
        if parse_stream_id(last_id) is None:
            return Replay([], "unknown_id")
        result = await _twice(self._batcher.call, (self._keys.history(user_id), last_id))
        if not result or int(result[0]) == 0:
            return Replay([], "trimmed")
        entries = result[1]
        if len(entries) > MAX_REPLAY:
            return Replay([], "trimmed")  # too far behind to replay: re-hydrate instead
        return Replay([frame for raw_id, fields in entries if (frame := _replayed(raw_id, fields))])

    async def cursor(self, user_id: str) -> str:
        """The id of the newest entry of the user's history (creating a marker entry when the
        history is empty): a position from which a resume misses nothing published later."""
        return _text(await _twice(self._cursors.call, self._keys.history(user_id)))

    async def _read_cursors(self, keys: list[str]) -> list[Any]:
        async def call(indices: list[int]) -> list[Any]:
            result: list[Any] = await self._cursor_script(
                keys=[keys[i] for i in indices], args=[MARKER_TTL_MS]
            )
            return result

        return await per_slot(self._client, keys, call)

    async def _read(self, requests: list[tuple[str, str]]) -> list[Any]:
        async def call(indices: list[int]) -> list[Any]:
            result: list[Any] = await self._script(
                keys=[requests[i][0] for i in indices],
                args=[MAX_REPLAY + 1, *(requests[i][1] for i in indices)],
            )
            return result

        return await per_slot(self._client, [key for key, _ in requests], call)


def _replayed(raw_id: Any, fields: list[Any]) -> Frame | None:
    """One history entry through the same filter as a live message: anything can write to
    the stream, not only the publishers, so an entry is forwarded only if a live `PUBLISH`
    of it would be (a registered domain event, as one compact line)."""
    event_id = _text(raw_id)
    raw = _field(fields, HISTORY_FIELD)
    try:
        payload = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        payload = None
    if payload is None and _field(fields, MARKER_FIELD) is not None:
        return None  # a cursor's marker, not an event
    if not isinstance(payload, str) or not payload.startswith("{"):
        logger.warning("history entry %s is not an event; skipped", event_id)
        return None
    frame = decode_message(splice_id(payload, event_id))
    if isinstance(frame, DropReason):
        logger.warning("history entry %s dropped: %s", event_id, frame)
        return None
    if frame.event_id is None or frame.event_id != parse_stream_id(event_id):
        # The publishers store events without an id; one of its own would override the
        # entry's and move the client's resume position.
        logger.warning("history entry %s carries an id of its own; skipped", event_id)
        return None
    return frame


async def _twice(call: Callable[[T], Awaitable[Any]], request: T) -> Any:
    """`call(request)`, once more after a failure. In a reconnect storm the worker's one
    command connection is busy, and a read that waited too long for it (redis-py's "No
    connection available") would otherwise cost its client a resync and a re-hydrate."""
    try:
        return await call(request)
    except REDIS_FAILURES:
        await asyncio.sleep(RETRY_DELAY_SECONDS)
    try:
        return await call(request)
    except REDIS_FAILURES as exc:
        raise HistoryUnavailableError(type(exc).__name__) from exc


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _field(fields: list[Any], name: str) -> Any:
    """The raw value of field `name` (bytes from Redis), or None."""
    for i in range(0, len(fields) - 1, 2):
        if _text(fields[i]) == name:
            return fields[i + 1]
    return None
