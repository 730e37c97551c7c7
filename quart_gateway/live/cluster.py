"""Redis Cluster: one pub/sub connection per shard primary, sharded pub/sub per user channel.

    ClusterMultiplexer ── slot of ws:{U} ──> owner's engine (a `Multiplexer`, sharded=True)
          │                                    one connection, SSUBSCRIBE ref-counted
          └── topology task: CLUSTER SLOTS every probe interval, and at once on trouble

A user's channel `ws:{U}` lives in one hash slot, and only the primary serving that slot
delivers its `SPUBLISH`es. The topology task keeps a table of slot owners and one engine per
primary; each channel sits on the engine of its slot's owner. When the table changes (a
failover, a slot migration, a new primary), channels whose slot has a new owner are released
by the old engine and adopted by the new one, which subscribes them there; their connections
are marked with a gap once the new subscription is acknowledged, and backfill from history as
after any reconnect (live/stream.py). The engines call for a refresh themselves when their
connection drops, when Redis answers `MOVED` to a `SSUBSCRIBE`, or when Redis 7 drops a shard
channel whose slot moved away (a `sunsubscribe` it pushes).

Each engine has a canary channel of its own, named so that its slot is one its node serves,
and published with `SPUBLISH` through the command client (routed to that node).

Channels subscribed before the first topology is known wait on a "parked" engine that has no
connection, and move to their owners as soon as it is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisError

from events.channels import KeySpace
from quart_gateway.live.multiplexer import (
    CANARY_PREFIX,
    CONNECT_TIMEOUT_SECONDS,
    Canary,
    Membership,
    Multiplexer,
    MultiplexerStatistics,
)
from quart_gateway.live.subscriber import Subscriber
from quart_gateway.live.wire import Frame
from quart_gateway.ops.metrics import Metrics

logger = logging.getLogger(__name__)

# (host, port, client name) -> a connection to that node, not yet connected.
NodeConnector = Callable[[str, int, str], aioredis.Connection]

PUBSUB_CLIENT_NAME = "gateway-pubsub"
TOPOLOGY_CLIENT_NAME = "gateway-topology"
# While something is amiss (an engine disconnected, channels parked) the topology is asked
# again this often, so that a failover is followed within a fraction of a second of the
# cluster's own decision.
UNSETTLED_REFRESH_SECONDS = 0.25
MIN_REFRESH_SPACING_SECONDS = 0.05


@dataclass(frozen=True)
class Topology:
    """Who serves each slot ("host:port", "" when nobody does), and every node seen."""

    owners: tuple[str, ...]
    nodes: tuple[tuple[str, int], ...] = field(compare=False)

    @property
    def primaries(self) -> set[str]:
        return {owner for owner in self.owners if owner}

    @classmethod
    def parse(cls, reply: Any, asked_host: str) -> Topology:
        """From a RESP2 `CLUSTER SLOTS` reply: [[start, end, [host, port, id], replicas...]]."""
        owners = [""] * REDIS_CLUSTER_HASH_SLOTS
        nodes: dict[tuple[str, int], None] = {}
        for start, end, *members in reply:
            for i, member in enumerate(members):
                host = _text(member[0]) or asked_host
                address = (host, int(member[1]))
                nodes[address] = None
                if i == 0:
                    owners[int(start) : int(end) + 1] = [f"{host}:{address[1]}"] * (
                        int(end) - int(start) + 1
                    )
        return cls(tuple(owners), tuple(nodes))


class ClusterMultiplexer:
    """The `Multiplexer` API over a Redis Cluster: `subscribe(user_id)`, `broadcast()`,
    `subscribers()`, `statistics()`, `start()`/`stop()`."""

    def __init__(
        self,
        connect: NodeConnector,
        seeds: Sequence[tuple[str, int]],
        *,
        metrics: Metrics,
        max_events: int,
        max_bytes: int,
        probe_interval: float = 5.0,
        canary: Canary | None = None,
    ) -> None:
        self._connect = connect
        self._seeds = list(seeds)
        self._metrics = metrics
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._probe_interval = probe_interval
        self._canary = canary
        self._keys = KeySpace(cluster=True)
        self._id = uuid.uuid4().hex
        self._trouble = asyncio.Event()
        self._topology: Topology | None = None
        self._parked = self._engine_for(None)  # never started: no connection, sends nothing
        self._engines: dict[str, Multiplexer] = {}
        self._home: dict[str, Multiplexer] = {}  # channel -> the engine that holds it
        self._task: asyncio.Task[None] | None = None
        self._probe: aioredis.Connection | None = None
        self._probe_address: tuple[str, int] | None = None
        self._retired_reconnects = 0
        self._retired_deaf = 0
        self._moves = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name="cluster-topology")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.stop()
        await self._drop_probe()

    def subscribers(self) -> list[Subscriber]:
        return [sub for engine in self._all_engines() for sub in engine.subscribers()]

    def statistics(self) -> MultiplexerStatistics:
        stats = [engine.statistics() for engine in self._engines.values()]
        parked = self._parked.statistics()
        rtts = [s.canary_round_trip for s in stats if s.canary_round_trip is not None]
        connected = bool(stats) and all(s.connected for s in stats)
        return MultiplexerStatistics(
            connected=connected,
            healthy=connected and self._topology is not None and all(s.healthy for s in stats),
            channels=parked.channels + sum(s.channels for s in stats),
            subscribers=parked.subscribers + sum(s.subscribers for s in stats),
            reconnects=self._retired_reconnects + sum(s.reconnects for s in stats),
            seconds_since_heard=max((s.seconds_since_heard for s in stats), default=0.0),
            canary_round_trip=max(rtts) if rtts else None,
            deaf_detections=self._retired_deaf + sum(s.deaf_detections for s in stats),
        )

    def nodes(self) -> list[str]:
        """The primaries this worker holds a pub/sub connection to ("host:port")."""
        return list(self._engines)

    # --- per connection ----------------------------------------------------------------------

    def subscribe(self, user_id: str) -> Membership:
        """As `Multiplexer.subscribe`, on the engine of the node serving the channel's slot."""
        return Membership(self, user_id)

    def add(self, user_id: str) -> Subscriber:
        name = self._keys.channel(user_id)
        engine = self._home.get(name)
        slot = -1
        if engine is None:
            slot = key_slot(name.encode())
            engine = self._home[name] = self._route(slot)
        return engine.join(user_id, name, slot)

    def remove(self, sub: Subscriber) -> None:
        name = self._keys.channel(sub.user_id)
        engine = self._home.get(name)  # the channel may have moved meanwhile
        if engine is not None and engine.leave(sub, name):
            del self._home[name]

    def broadcast(self, frame: Frame, *, slot: int = 0, slots: int = 1) -> None:
        for engine in self._all_engines():
            engine.broadcast(frame, slot=slot, slots=slots)

    # --- topology ----------------------------------------------------------------------------

    def _all_engines(self) -> list[Multiplexer]:
        return [self._parked, *self._engines.values()]

    def _engine_for(self, address: str | None) -> Multiplexer:
        def factory() -> aioredis.Connection:
            assert address is not None, "the parked engine never connects"
            host, port = address.rsplit(":", 1)
            return self._connect(host, int(port), PUBSUB_CLIENT_NAME)

        return Multiplexer(
            factory,
            metrics=self._metrics,
            max_events=self._max_events,
            max_bytes=self._max_bytes,
            probe_interval=self._probe_interval,
            canary=self._canary,
            sharded=True,
            canary_channel=self._canary_for(address) if address else None,
            on_trouble=self._trouble.set,
        )

    def _route(self, slot: int) -> Multiplexer:
        if self._topology is not None:
            engine = self._engines.get(self._topology.owners[slot])
            if engine is not None:
                return engine
        self._trouble.set()  # nobody serves it (yet): find out
        return self._parked

    def _canary_for(self, address: str) -> str:
        """A canary channel in a slot that `address` serves: the first suffix that lands there."""
        assert self._topology is not None
        owners = self._topology.owners
        for n in itertools.count():
            name = f"{CANARY_PREFIX}{self._id}:{n}"
            if owners[key_slot(name.encode())] == address:
                return name
        raise AssertionError("unreachable")

    async def _maintain(self) -> None:
        """Refresh the topology forever; follow every change. Never dies of one failure."""
        while True:
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("redis cluster topology unavailable: %s", exc or type(exc).__name__)
            except Exception:
                self._metrics.task_failures.labels(task="cluster-topology").inc()
                logger.exception("following the redis cluster topology failed; continuing")
            timeout = UNSETTLED_REFRESH_SECONDS if self._unsettled() else self._probe_interval
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._trouble.wait()
            self._trouble.clear()
            await asyncio.sleep(MIN_REFRESH_SPACING_SECONDS)

    def _unsettled(self) -> bool:
        return (
            self._topology is None
            or bool(self._parked.channels)
            or any(not engine.connected for engine in self._engines.values())
        )

    async def _refresh(self) -> None:
        topology = await self._fetch()
        if topology != self._topology:
            logger.warning(
                "redis cluster topology: %d primaries",
                len(topology.primaries),
                extra={"redis_primaries": sorted(topology.primaries)},
            )
        self._topology = topology
        await self._reconcile(topology)

    async def _fetch(self) -> Topology:
        """`CLUSTER SLOTS` from the node that answered last, else any node known or seeded."""
        known = self._topology.nodes if self._topology else ()
        candidates = dict.fromkeys(
            [*([self._probe_address] if self._probe_address else []), *known, *self._seeds]
        )
        error: Exception = ConnectionError("no redis cluster node known")
        for host, port in candidates:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    if self._probe is None or self._probe_address != (host, port):
                        await self._drop_probe()
                        conn = self._connect(host, port, TOPOLOGY_CLIENT_NAME)
                        self._probe, self._probe_address = conn, (host, port)
                        await conn.connect()  # type: ignore[no-untyped-call]
                    await self._probe.send_command("CLUSTER", "SLOTS")
                    reply = await self._probe.read_response()
                return Topology.parse(reply, host)
            except (RedisError, OSError, TimeoutError) as exc:
                error = exc
                await self._drop_probe()
        raise error

    async def _drop_probe(self) -> None:
        probe, self._probe, self._probe_address = self._probe, None, None
        if probe is not None:
            with suppress(Exception):
                await probe.disconnect(nowait=True)

    async def _reconcile(self, topology: Topology) -> None:
        """Bring engines and channels in line with `topology`."""
        owners = topology.owners
        primaries = topology.primaries
        for address in sorted(primaries - self._engines.keys()):
            engine = self._engines[address] = self._engine_for(address)
            await engine.start()
        moves_before = self._moves
        for engine in self._all_engines():
            for name, channel in list(engine.channels.items()):
                if channel.slot < 0:
                    channel.slot = key_slot(name.encode())
                target = self._engines.get(owners[channel.slot], self._parked)
                if target is engine:
                    if engine is not self._parked:
                        engine.resubscribe(name)
                    continue
                moved = engine.release(name)
                if moved is not None:
                    target.adopt(*moved)
                    self._home[name] = target
                    self._moves += 1
        if moves := self._moves - moves_before:
            logger.warning("%d channels moved to the node now serving their slot", moves)
        for address in sorted(self._engines.keys() - primaries):
            engine = self._engines.pop(address)  # its channels have all moved above
            stats = engine.statistics()
            self._retired_reconnects += stats.reconnects
            self._retired_deaf += stats.deaf_detections
            logger.warning("redis cluster node %s no longer serves slots; disconnecting", address)
            await engine.stop()
        for address, engine in self._engines.items():
            if owners[key_slot(engine.canary_channel.encode())] != address:
                engine.replace_canary(self._canary_for(address))
            else:
                engine.resubscribe_canary()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
