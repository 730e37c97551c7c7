"""One Redis subscription per worker, shared by every local connection.

    Redis ──(1 pub/sub connection)──> reader ──parse/validate/encode once──> Frame
                                                │
                 channels["ws:U"].subscribers ──┼─> Subscriber.offer(frame)   (sync, bounded)
                                                └─> Subscriber.offer(frame)

`subscribe(user_id)` reference-counts `SUBSCRIBE ws:{user}`: the first local connection of a
user sends it, the last one out sends `UNSUBSCRIBE`. The reader never awaits a client.

The pub/sub connection is a bare redis-py `Connection`, not a `PubSub` object: `PubSub`
reconnects and resubscribes silently inside its retry layer, which would hide exactly the
gaps that connections must close. Here the supervisor owns reconnection: on any failure it
backs off with jitter, resubscribes every live channel on a new connection and, once each
channel's `SUBSCRIBE` is acknowledged, marks a gap on the connections that were open during
the outage; each one then backfills from history (or gets `resync`, see live/stream.py).
A watchdog pings the idle connection and restarts it if Redis stops answering (a half-open
TCP connection looks healthy otherwise).

One `Multiplexer` drives one connection to one server. In a Redis Cluster it is the engine of
one shard primary (`sharded=True`: `SSUBSCRIBE`, `smessage`, `SUNSUBSCRIBE`), and
`live/cluster.py` routes each channel to the engine of its slot's owner, moving channels
between engines (`release()`/`adopt()`) when the topology changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisError, ResponseError

from events.channels import user_channel, valid_user_id
from quart_gateway.aio.backoff import Backoff
from quart_gateway.aio.concurrency import current_task_cancelling, first_completed
from quart_gateway.live import disconnect
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import DropReason, Frame, decode_message
from quart_gateway.ops.metrics import Metrics

logger = logging.getLogger(__name__)

ConnectionFactory = Callable[[], aioredis.Connection]
# Publishes one message on a channel through a connection other than the pub/sub one.
Canary = Callable[[str, str], Awaitable[object]]
# Told when the connection is lost or Redis says a channel lives elsewhere (cluster).
Trouble = Callable[[], None]

# Each worker's canary channel: not a user channel, so no client ever subscribes to it.
CANARY_PREFIX = "gateway-canary:"

CONNECT_TIMEOUT_SECONDS = 5.0
# A listener that stayed up this long counts as a success: the backoff starts over.
STABLE_AFTER_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class MultiplexerStatistics:
    connected: bool
    healthy: bool
    channels: int
    subscribers: int
    reconnects: int
    seconds_since_heard: float
    canary_round_trip: float | None  # seconds, the last canary's; None before the first
    deaf_detections: int


class Members(Protocol):
    """Where connections register: `add()` one for a user, `remove()` it again."""

    def add(self, user_id: str) -> Subscriber: ...

    def remove(self, sub: Subscriber) -> None: ...


class Membership:
    """`async with channels.subscribe(user_id) as sub`: registers a connection on enter and
    unregisters it on exit, even on cancel. A slotted class, not an `@asynccontextmanager`:
    one lives as long as each connection, and a generator-based one costs 0.7 KiB more."""

    __slots__ = ("_members", "_sub", "_user_id")

    def __init__(self, members: Members, user_id: str) -> None:
        if not valid_user_id(user_id):
            # Admission refuses these; here it guards the one SUBSCRIBE every channel shares.
            raise ValueError("not a valid user id")
        self._members = members
        self._user_id = user_id
        self._sub: Subscriber | None = None

    async def __aenter__(self) -> Subscriber:
        if self._sub is not None:
            raise RuntimeError("a membership is entered once")
        self._sub = self._members.add(self._user_id)
        return self._sub

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            self._members.remove(self._sub)
            self._sub = None


class LiveChannels(Protocol):
    """What the app needs of a worker's subscriptions: a `Multiplexer` (one Redis) or a
    `live.cluster.ClusterMultiplexer` (one engine per shard primary)."""

    def subscribe(self, user_id: str) -> Membership: ...

    def broadcast(self, frame: Frame, *, slot: int = 0, slots: int = 1) -> None: ...

    def subscribers(self) -> list[Subscriber]: ...

    def statistics(self) -> MultiplexerStatistics: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Channel:
    __slots__ = ("active", "legacy", "name", "slot", "subscribers")

    def __init__(self, name: str, slot: int = -1) -> None:
        self.name = name
        self.slot = slot  # cluster hash slot; -1 when there is no cluster
        self.subscribers: set[Subscriber] = set()
        self.active = False  # SUBSCRIBE acknowledged on the current connection
        self.legacy = False  # has carried events without ids (bare PUBLISH): not in history


class Multiplexer:
    def __init__(
        self,
        connection_factory: ConnectionFactory,
        *,
        metrics: Metrics,
        max_events: int,
        max_bytes: int,
        probe_interval: float = 5.0,
        backoff: Backoff | None = None,
        canary: Canary | None = None,
        sharded: bool = False,
        canary_channel: str | None = None,
        on_trouble: Trouble | None = None,
    ) -> None:
        self._factory = connection_factory
        self._metrics = metrics
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._probe_interval = probe_interval
        self._backoff = backoff or Backoff()
        self._channels: dict[str, Channel] = {}
        self._inflight: Counter[str] = Counter()  # SUBSCRIBEs sent but not yet acknowledged
        self._commands: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
        self._needs_gap: set[Subscriber] = set()
        self._conn: aioredis.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_heard = time.monotonic()
        self._reconnects = 0
        self._subscribers = 0
        self._closing = False
        self._canary = canary
        self._canary_channel = canary_channel or f"{CANARY_PREFIX}{uuid.uuid4().hex}"
        self._sharded = sharded
        prefix = "S" if sharded else ""
        self._subscribe_command = f"{prefix}SUBSCRIBE"
        self._unsubscribe_command = f"{prefix}UNSUBSCRIBE"
        self._message_kind = f"{prefix}message".lower().encode()
        self._subscribe_kind = self._subscribe_command.lower().encode()
        self._unsubscribe_kind = self._unsubscribe_command.lower().encode()
        self._on_trouble = on_trouble
        self._canary_sent: float | None = None  # when the canary in flight was published
        self._canary_round_trip: float | None = None
        self._canary_ready = False  # its SUBSCRIBE is acknowledged on this connection
        self._deaf = 0
        self._canary_tasks: set[asyncio.Task[None]] = set()
        self._drops_logged_at: dict[str, float] = {}
        self._drops_suppressed: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="multiplexer")

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    def subscribers(self) -> list[Subscriber]:
        """Every connection registered now."""
        return [sub for channel in self._channels.values() for sub in channel.subscribers]

    def statistics(self) -> MultiplexerStatistics:
        age = time.monotonic() - self._last_heard
        connected = self._conn is not None
        waiting = self._canary_sent is not None and (
            time.monotonic() - self._canary_sent > self._probe_interval
        )
        return MultiplexerStatistics(
            connected=connected,
            healthy=connected and age < 3 * self._probe_interval and not waiting,
            channels=len(self._channels),
            subscribers=self._subscribers,
            reconnects=self._reconnects,
            seconds_since_heard=age,
            canary_round_trip=self._canary_round_trip,
            deaf_detections=self._deaf,
        )

    # --- per connection ----------------------------------------------------------------------

    def subscribe(self, user_id: str) -> Membership:
        """Register a connection for `user_id`'s events while in the `async with` block.

        Frames are queued from the moment of registration; `Subscriber.wait_active()` tells
        when the Redis subscription behind them is confirmed.
        """
        return Membership(self, user_id)

    def add(self, user_id: str) -> Subscriber:
        return self.join(user_id, user_channel(user_id))

    def remove(self, sub: Subscriber) -> None:
        self.leave(sub, user_channel(sub.user_id))

    def join(self, user_id: str, name: str, slot: int = -1) -> Subscriber:
        """Register a connection on channel `name`, subscribing it if it is the first."""
        sub = Subscriber(user_id, max_events=self._max_events, max_bytes=self._max_bytes)
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(name, slot)
            channel.subscribers.add(sub)
            self._subscribers += 1
            self._send(self._subscribe_command, name)
        else:
            channel.subscribers.add(sub)
            self._subscribers += 1
            if channel.active:
                sub.activate()
        return sub

    def leave(self, sub: Subscriber, name: str) -> bool:
        """Unregister a connection; True when it was the channel's last (now unsubscribed)."""
        channel = self._channels.get(name)
        self._needs_gap.discard(sub)
        if channel is None or sub not in channel.subscribers:
            return False
        self._subscribers -= 1
        channel.subscribers.discard(sub)
        if channel.subscribers:
            return False
        del self._channels[name]
        self._send(self._unsubscribe_command, name)
        return True

    # --- moving channels between engines (cluster) -------------------------------------------

    @property
    def channels(self) -> dict[str, Channel]:
        return self._channels

    @property
    def canary_channel(self) -> str:
        return self._canary_channel

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def release(self, name: str) -> tuple[Channel, set[Subscriber]] | None:
        """Hand channel `name` over to another engine: it leaves this connection, and the
        returned connections (all of it, if it was active here) may have missed events."""
        channel = self._channels.pop(name, None)
        if channel is None:
            return None
        self._inflight.pop(name, None)
        self._subscribers -= len(channel.subscribers)
        gap = channel.subscribers & self._needs_gap
        self._needs_gap -= gap
        if channel.active:
            gap = set(channel.subscribers)
            channel.active = False
        self._send(self._unsubscribe_command, name)
        return channel, gap

    def adopt(self, channel: Channel, gap: set[Subscriber]) -> None:
        """Take over a channel released by another engine; `gap` backfill once it is active."""
        self._channels[channel.name] = channel
        self._subscribers += len(channel.subscribers)
        self._needs_gap |= gap
        self._send(self._subscribe_command, channel.name)

    def resubscribe(self, name: str) -> None:
        """Subscribe `name` again if it is neither active nor on its way (a cluster told this
        connection it had moved, and it has not)."""
        channel = self._channels.get(name)
        if channel is not None and not channel.active and not self._inflight.get(name):
            self._send(self._subscribe_command, name)

    def resubscribe_canary(self) -> None:
        if not self._canary_ready and not self._inflight.get(self._canary_channel):
            self._send(self._subscribe_command, self._canary_channel)

    def replace_canary(self, name: str) -> None:
        """Use another canary channel (cluster: the old one's slot moved to another node)."""
        old, self._canary_channel = self._canary_channel, name
        self._canary_sent, self._canary_ready = None, False
        self._inflight.pop(old, None)
        self._send(self._unsubscribe_command, old)
        self._send(self._subscribe_command, name)

    def broadcast(self, frame: Frame, *, slot: int = 0, slots: int = 1) -> None:
        """Offer `frame` to the active connections of one slot out of `slots` (heartbeats:
        pinging every connection at the same instant stalls the worker for everyone)."""
        for channel in self._channels.values():
            for sub in channel.subscribers:
                if sub.active and sub.seq % slots == slot:
                    self._offer(sub, frame)

    # --- Redis side --------------------------------------------------------------------------

    def _send(self, *args: str) -> None:
        """Queue a (UN)SUBSCRIBE for the writer task of the current connection, if there is one.

        Handlers never write to the socket themselves: a handler cancelled mid-write would
        close the connection shared by every client. Without a connection there is nothing to
        do: the supervisor subscribes every channel in `_channels` when it (re)connects.
        """
        if self._conn is None:
            return
        if args[0] == self._subscribe_command:
            for name in args[1:]:
                self._inflight[name] += 1
        self._commands.put_nowait(args)

    async def _write(self, conn: aioredis.Connection) -> None:
        while True:
            args = await self._commands.get()
            try:
                packed = conn.pack_command(*args)
            except Exception:
                # Packing happens before anything is written, so a command that cannot be
                # encoded is dropped alone; the connection and every other channel carry on.
                self._metrics.task_failures.labels(task="multiplexer-writer").inc()
                logger.exception("could not encode a pub/sub command; dropped")
                continue
            await conn.send_packed_command(packed, check_health=False)

    async def _supervise(self) -> None:
        """Run the listener forever: a failure is logged, backed off and recovered from."""
        first = True
        while not self._closing:
            started = time.monotonic()
            try:
                await self._listen(first)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if current_task_cancelling():
                    raise asyncio.CancelledError from exc
                logger.warning("redis pub/sub connection lost: %s", exc or type(exc).__name__)
            except Exception:
                logger.exception("multiplexer listener crashed; restarting it")
            if time.monotonic() - started >= STABLE_AFTER_SECONDS:
                self._backoff.reset()  # it worked for a while: this is a new outage
            first = False
            await self._drop_connection()
            if self._on_trouble is not None:
                self._on_trouble()
            self._reconnects += 1
            self._metrics.redis_reconnects.inc()
            # Every open connection may miss events from now until its channel is back.
            # (Connections still waiting for their first confirmation have missed nothing.)
            for channel in self._channels.values():
                if channel.active:
                    self._needs_gap.update(channel.subscribers)
                    channel.active = False
            await asyncio.sleep(self._backoff.next_delay())

    async def _listen(self, first: bool) -> None:
        conn = self._factory()
        try:
            # Bounded: the handshake (AUTH, CLIENT SETNAME) has no read timeout of its own,
            # and a peer that accepts but never answers must not wedge the listener.
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        # From here on, new channels are sent by `subscribe()`; the ones registered before
        # are in this snapshot. No await between the two lines keeps that exact.
        self._commands = asyncio.Queue()
        self._inflight.clear()
        self._conn, names = conn, list(self._channels)
        self._last_heard = time.monotonic()
        self._canary_sent, self._canary_ready = None, False
        if self._sharded:
            # One slot per command: a cluster refuses a SSUBSCRIBE across slots (CROSSSLOT).
            for name in (self._canary_channel, *names):
                self._send(self._subscribe_command, name)
        else:
            self._send(self._subscribe_command, self._canary_channel, *names)
        if not first:
            logger.warning("redis pub/sub reconnected; resubscribing %d channels", len(names))
        await first_completed(self._read(conn), self._write(conn), self._watchdog(conn))

    async def _read(self, conn: aioredis.Connection) -> None:
        channels = self._channels
        metrics = self._metrics
        while True:
            try:
                response = await conn.read_response(timeout=math.inf)
            except ResponseError as exc:
                # An error reply (read whole: the connection stays usable), e.g. MOVED to a
                # SSUBSCRIBE whose slot another node serves now.
                self._last_heard = time.monotonic()
                self._refused(exc)
                continue
            self._last_heard = time.monotonic()
            if not isinstance(response, list) or not response:
                continue
            try:
                self._handle(response, channels, metrics)
            except Exception:
                # One message must never take the shared connection down for everyone.
                metrics.dropped.labels(reason="internal_error").inc()
                logger.exception("failed to handle a pub/sub message; dropped")

    def _handle(self, response: list[Any], channels: dict[str, Channel], metrics: Metrics) -> None:
        kind = response[0]
        if kind == self._message_kind:
            channel = channels.get(response[1].decode("utf-8", "replace"))
            if channel is None:
                if response[1] == self._canary_channel.encode():
                    self._canary_heard()
                return  # else unsubscribed meanwhile
            frame = decode_message(response[2])
            if isinstance(frame, DropReason):
                metrics.dropped.labels(reason=str(frame)).inc()
                self._log_drop(frame)
                return
            self._dispatch(channel, frame)
        elif kind == self._subscribe_kind:
            self._acknowledged(response[1].decode("utf-8", "replace"))
        elif kind == self._unsubscribe_kind and self._sharded:
            self._unsubscribed(response[1].decode("utf-8", "replace"))

    def _refused(self, exc: ResponseError) -> None:
        """An error reply to a (UN)SUBSCRIBE or PING. MOVED: the channels of that slot wait
        for the topology to be refreshed and are then subscribed where they live now."""
        if isinstance(exc, MovedError):
            for name in [n for n in self._inflight if key_slot(n.encode()) == exc.slot_id]:
                del self._inflight[name]
                if name == self._canary_channel:
                    self._canary_ready = False
        else:
            logger.warning("redis refused a pub/sub command: %s", exc)
        if self._on_trouble is not None:
            self._on_trouble()

    def _unsubscribed(self, name: str) -> None:
        """A `sunsubscribe` from Redis. For a channel still wanted here and acknowledged, the
        server dropped it: its slot moved to another node (Redis 7 tells shard subscribers)."""
        if name == self._canary_channel and not self._inflight.get(name):
            self._canary_sent, self._canary_ready = None, False
        else:
            channel = self._channels.get(name)
            if channel is None or self._inflight.get(name) or not channel.active:
                return  # the acknowledgement of our own SUNSUBSCRIBE
            channel.active = False
            self._needs_gap.update(channel.subscribers)
        if self._on_trouble is not None:
            self._on_trouble()

    def _dispatch(self, channel: Channel, frame: Frame) -> None:
        if frame.event_id is None:
            channel.legacy = True
        delivered = 0
        for sub in channel.subscribers:
            if self._offer(sub, frame):
                delivered += 1
        self._metrics.delivered.inc(delivered)

    def _offer(self, sub: Subscriber, frame: Frame) -> bool:
        """Offer a frame to one connection; log and count it if that overflows its queue."""
        was_open = sub.close_reason is None
        if sub.offer(frame):
            return True
        if was_open and sub.close_reason is disconnect.SLOW_CONSUMER:
            events, size = sub.overflow_depth
            logger.info(
                "slow consumer disconnected",
                extra={
                    "user_id": sub.user_id,
                    "conn_id": sub.conn_id,
                    "queued_events": events,
                    "queued_bytes": size,
                },
            )
            self._metrics.slow_disconnects.inc()
        return False

    def _log_drop(self, reason: DropReason) -> None:
        """One WARNING per reason per minute: a misbehaving publisher must not flood logs."""
        now = time.monotonic()
        suppressed = self._drops_suppressed.get(reason, 0)
        if now - self._drops_logged_at.get(reason, -math.inf) < 60:
            self._drops_suppressed[reason] = suppressed + 1
            return
        self._drops_logged_at[reason] = now
        self._drops_suppressed[reason] = 0
        logger.warning(
            "dropped a published message: %s (%d more since the last report)", reason, suppressed
        )

    def _acknowledged(self, name: str) -> None:
        if name == self._canary_channel:
            self._inflight[name] -= 1
            self._canary_ready = True
            return
        self._inflight[name] -= 1
        if self._inflight[name] > 0:
            return  # a later SUBSCRIBE of the same channel is still on its way
        del self._inflight[name]
        channel = self._channels.get(name)
        if channel is None or channel.active:
            return
        channel.active = True
        for sub in channel.subscribers:
            sub.activate()
        for sub in channel.subscribers:
            if sub in self._needs_gap:
                # Each connection's pump backfills what it missed from history, or resyncs.
                self._needs_gap.discard(sub)
                sub.mark_gap(legacy=channel.legacy)

    async def _watchdog(self, conn: aioredis.Connection) -> None:
        """Ping when idle; fail the listener if Redis stops answering, or if the canary does
        not come back (a connection that answers but no longer receives: deaf)."""
        interval = self._probe_interval
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            idle = now - self._last_heard
            if idle > 3 * interval:
                raise TimeoutError(f"no answer from redis for {idle:.1f}s")
            if idle > interval:
                self._commands.put_nowait(("PING",))
            if self._canary_sent is not None and now - self._canary_sent > 2 * interval:
                self._deaf += 1
                raise TimeoutError(f"deaf: the canary did not come back in {2 * interval:.1f}s")
            if self._canary is not None and self._canary_ready and self._canary_sent is None:
                self._send_canary(now)

    def _send_canary(self, now: float) -> None:
        """Publish the canary through the command connection; the reader hears it back."""
        assert self._canary is not None
        publish = self._canary

        async def send() -> None:
            try:
                async with asyncio.timeout(self._probe_interval):
                    await publish(self._canary_channel, "canary")
            except Exception as exc:  # Redis unreachable: the readiness probe reports that
                logger.debug("canary not published: %s", exc)
                self._canary_sent = None

        self._canary_sent = now
        task = asyncio.create_task(send(), name="multiplexer-canary")
        self._canary_tasks.add(task)
        task.add_done_callback(self._canary_tasks.discard)

    def _canary_heard(self) -> None:
        if self._canary_sent is not None:
            self._canary_round_trip = time.monotonic() - self._canary_sent
            self._canary_sent = None

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                await conn.disconnect(nowait=True)
