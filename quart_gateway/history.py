"""Resume: read what a reconnecting client missed from its user's history stream.

The publishers append every event to a Redis Stream (`events.channels.history_key`) capped by
length and age. A client that comes back with the id of the last event it saw gets the entries
after it, if the stream still holds every one of them; otherwise it gets `resync` and
re-hydrates. The stream's own bookkeeping decides that exactly: `max-deleted-entry-id` is the
newest entry ever trimmed, so a gap exists iff the client's id is older than it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from events.channels import HISTORY_FIELD, history_key, parse_stream_id, splice_id
from quart_gateway.wire import Frame, make_frame

logger = logging.getLogger(__name__)

MAX_REPLAY = 10_000

# KEYS[1] = stream; ARGV[1] = last seen id, ARGV[2] = max entries.
# Returns {0} if the stream does not exist, else {1, last-generated-id, max-deleted-id, entries}.
_READ = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', false
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
if not deleted then
  -- Before Redis 7 streams keep no trim bookkeeping: anything older than the oldest entry
  -- may have been trimmed (conservative: such clients get resync).
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  deleted = first[1] and first[1][1] or '0-0'
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {1, last, deleted, entries}
"""


@dataclass(frozen=True, slots=True)
class Replay:
    frames: list[Frame]
    # None: the replay is complete. Otherwise why the client must re-hydrate instead.
    gap: Literal["unknown_id", "trimmed", None] = None


class HistoryReader:
    def __init__(self, client: aioredis.Redis) -> None:
        self._script = client.register_script(_READ)

    async def since(self, user_id: str, last_id: str) -> Replay:
        seen = parse_stream_id(last_id)
        if seen is None:
            return Replay([], "unknown_id")
        result: list[Any] = await self._script(
            keys=[history_key(user_id)], args=[last_id, MAX_REPLAY]
        )
        if not result or int(result[0]) == 0:
            return Replay([], "trimmed")  # expired whole, or never existed: can't vouch for it
        last, deleted, entries = _text(result[1]), _text(result[2]), result[3]
        newest, trimmed = parse_stream_id(last), parse_stream_id(deleted)
        if newest is None or seen > newest:
            return Replay([], "unknown_id")
        if trimmed is not None and seen < trimmed:
            return Replay([], "trimmed")
        if len(entries) >= MAX_REPLAY:
            return Replay([], "trimmed")
        frames = []
        for raw_id, fields in entries:
            event_id = _text(raw_id)
            payload = _field(fields, HISTORY_FIELD)
            if payload is None:
                logger.warning("history entry %s has no payload; skipped", event_id)
                continue
            frames.append(make_frame(splice_id(payload, event_id), event_id))
        return Replay(frames)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: list[Any], name: str) -> str | None:
    for i in range(0, len(fields) - 1, 2):
        if _text(fields[i]) == name:
            return _text(fields[i + 1])
    return None
