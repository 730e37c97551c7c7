"""`EventPublisher`: validate, store in history and publish, in one round trip."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic_core import to_jsonable_python
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from events import DOMAIN_EVENT_TYPES, Event, parse_event
from events.channels import HISTORY_FIELD, USER_ID_RULE, KeySpace, valid_user_id
from publishers._errors import InvalidEventError, PublishError

# KEYS[1] = history stream. ARGV = channel, event JSON (no id), max length, max age in ms.
# Appends to history (capped exactly by length and age: the caps are small, and exact trimming
# keeps "what can be resumed" predictable), then publishes the same JSON with the new
# id spliced in as its first member. Returns the id. Atomic: no reader sees one without the other.
# In a Redis Cluster the channel is a shard channel (SPUBLISH) in the slot of the history key.
_PUBLISH_TEMPLATE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', '{HISTORY_FIELD}', ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', tostring(math.max(0, now - tonumber(ARGV[4]))))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('%s', ARGV[1], '{{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
return id
"""
_PUBLISH = _PUBLISH_TEMPLATE % "PUBLISH"
_SPUBLISH = _PUBLISH_TEMPLATE % "SPUBLISH"

# A cluster client raises RedisClusterException (not a RedisError) when no node answers.
_REDIS_FAILURES = (RedisError, RedisClusterException, OSError)


# What validating and serialising arbitrary caller data can raise. pydantic's ValidationError
# and PydanticSerializationError, UnicodeError (a surrogate, bytes that are not UTF-8) and
# json's refusal of NaN are all ValueErrors; RecursionError is nesting too deep to encode.
_BAD_DATA = (ValueError, TypeError, RecursionError)


def require_user_id(user_id: object) -> None:
    """Raise InvalidEventError unless `user_id` follows `events.channels.valid_user_id`."""
    if not valid_user_id(user_id):
        raise InvalidEventError(f"user_id refused: {USER_ID_RULE}")


def _data(event: Event | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(event, Event):
        # Validated again below: model_construct() and model_copy(update=...) skip validation.
        return event.model_dump(warnings=False)
    if isinstance(event, Mapping):
        return dict(event)
    raise TypeError(f"an event is an `events` model or a mapping, not {type(event).__name__}")


def encode(event: Event | Mapping[str, Any]) -> tuple[Event, str]:
    """Validate a domain event and return it with its compact JSON text (without `id`).

    The text is strict JSON (no NaN or Infinity) and encodable as UTF-8. Raises
    InvalidEventError, and no other exception, for anything that is not a publishable event.
    """
    try:
        model = parse_event(_data(event))
    except _BAD_DATA as exc:
        raise InvalidEventError(f"invalid event: {exc}") from exc
    if model.event not in DOMAIN_EVENT_TYPES:
        raise InvalidEventError(f"{model.event!r} is not an event a service may publish")
    try:
        # Unknown fields are kept and not validated: serialising them is what can fail here.
        payload = model.model_dump(exclude={"id"}, warnings=False)
        text = json.dumps(
            payload,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=to_jsonable_python,  # datetimes, UUIDs, enums, ... as pydantic writes them
        )
        text.encode()  # a lone surrogate fails here rather than in redis-py
    except _BAD_DATA as exc:
        raise InvalidEventError(f"event cannot be sent as JSON: {exc}") from exc
    return model, text


class EventPublisher:
    """Publishes typed events to one user's live channel `ws:<user_id>` and history.

    Build it from an existing `redis.asyncio.Redis` (its connection pool is shared and not
    closed here) or from a URL with `from_url()` (then `aclose()` it, or use `async with`).
    Given a `redis.asyncio.RedisCluster` (or `from_url(url, cluster=True)`), it publishes with
    `SPUBLISH` to the shard channel `ws:{<user_id>}` and keeps history in
    `ws-history:{<user_id>}`, the names a gateway in `REDIS_MODE=cluster` uses.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        history_max_events: int = 1000,
        history_ttl_seconds: int = 86_400,
        timeout: float = 2.0,
        max_event_bytes: int = 65_536,
    ) -> None:
        if min(history_max_events, history_ttl_seconds, max_event_bytes) < 1 or timeout <= 0:
            raise ValueError("sizes, ages and the timeout must be positive")
        self._client = client
        self._owns_client = False
        self._sentinel: Sentinel | None = None  # from_sentinel(): closed with the client
        self._max_events = history_max_events
        self._ttl_ms = history_ttl_seconds * 1000
        self._timeout = timeout
        self._max_event_bytes = max_event_bytes
        cluster = isinstance(client, RedisCluster)
        self._keys = KeySpace(cluster=cluster)
        self._script = client.register_script(_SPUBLISH if cluster else _PUBLISH)

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **kwargs: Any) -> EventPublisher:
        """`cluster=True`: `url` names any node of a Redis Cluster."""
        client: aioredis.Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        else:
            client = aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        publisher = cls(client, **kwargs)
        publisher._owns_client = True
        return publisher

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service: str = "mymaster",
        *,
        sentinel_password: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> EventPublisher:
        """Publish to the primary of a Sentinel-monitored `service`, following failovers: a
        call that fails during one raises PublishError, and the next goes to the new primary.
        `aclose()` it (or use `async with`)."""
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(sentinels),
            sentinel_kwargs={
                "password": sentinel_password,
                "socket_timeout": 1.0,
                "socket_connect_timeout": 1.0,
            },
        )
        client = sentinel.master_for(
            service, socket_timeout=5.0, socket_connect_timeout=5.0, password=password
        )
        publisher = cls(client, **kwargs)
        publisher._owns_client = True
        publisher._sentinel = sentinel
        return publisher

    async def publish(self, user_id: str, event: Event | Mapping[str, Any]) -> str:
        """Publish `event` to `user_id`; return its id (the history stream id).

        Zero connected receivers is normal: the event still goes to history for resume.
        Raises InvalidEventError for a user id that `events.channels.valid_user_id` refuses
        and for an invalid or oversized event, and PublishError if Redis fails or does not
        answer within the timeout. After a timeout the event may still have been published:
        a retry can then deliver it twice, under two ids.
        """
        require_user_id(user_id)
        _, text = encode(event)
        size = len(text.encode())
        if size > self._max_event_bytes:
            # Live events are notifications; bulk data belongs behind the status endpoint.
            raise InvalidEventError(f"event is {size} bytes; the limit is {self._max_event_bytes}")
        try:
            async with asyncio.timeout(self._timeout):
                event_id = await self._script(
                    keys=[self._keys.history(user_id)],
                    args=[self._keys.channel(user_id), text, self._max_events, self._ttl_ms],
                )
        except TimeoutError as exc:
            raise PublishError(f"publish timed out after {self._timeout}s") from exc
        except _REDIS_FAILURES as exc:
            raise PublishError(f"publish failed: {exc}") from exc
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
        if self._sentinel is not None:  # its own connections to the sentinels
            for client in self._sentinel.sentinels:
                await client.aclose()
            self._sentinel = None

    async def __aenter__(self) -> EventPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
