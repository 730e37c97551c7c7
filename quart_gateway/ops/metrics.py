"""Prometheus metrics of one worker, in a registry of its own (one per app instance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "gateway_connections", "Open live-stream connections", ["transport"], registry=r
        )
        self.connections_total = Counter(
            "gateway_connections_opened",
            "Live-stream connections opened",
            ["transport"],
            registry=r,
        )
        self.rejected = Counter(
            "gateway_connections_rejected",
            "Live-stream connections refused, by reason",
            ["transport", "reason"],
            registry=r,
        )
        self.disconnects = Counter(
            "gateway_disconnects", "Streams ended by the gateway, by reason", ["reason"], registry=r
        )
        self.delivered = Counter(
            "gateway_events_delivered",
            "Events queued to connections (one per connection per event)",
            registry=r,
        )
        self.replayed = Counter(
            "gateway_events_replayed", "Events sent from history on resume", registry=r
        )
        self.dropped = Counter(
            "gateway_events_dropped",
            "Published messages not forwarded, by reason",
            ["reason"],
            registry=r,
        )
        self.slow_disconnects = Counter(
            "gateway_slow_consumer_disconnects",
            "Connections closed because their queue overflowed",
            registry=r,
        )
        self.task_failures = Counter(
            "gateway_task_failures",
            "Exceptions caught in a per-worker background task, by task",
            ["task"],
            registry=r,
        )
        self.redis_reconnects = Counter(
            "gateway_redis_reconnects",
            "Pub/sub listener connection failures, each followed by a reconnection attempt",
            registry=r,
        )
        self.resyncs = Counter(
            "gateway_resyncs", "resync messages sent to clients, by reason", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "gateway_rate_limited", "Requests refused by the per-user rate limit", registry=r
        )
        self.redis_errors = Counter(
            "gateway_redis_errors",
            "Redis command failures outside the listener, by operation",
            ["operation"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Failed upstream calls, by error code", ["code"], registry=r
        )

    def add_listener_gauges(self, read: Callable[[], ListenerStatistics]) -> None:
        """Gauges read at scrape time from the multiplexer's statistics()."""
        self.registry.register(_ListenerCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ListenerStatistics(Protocol):
    """What the listener gauges read (the multiplexer's statistics())."""

    @property
    def seconds_since_heard(self) -> float: ...
    @property
    def channels(self) -> int: ...
    @property
    def subscribers(self) -> int: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def canary_round_trip(self) -> float | None: ...
    @property
    def deaf_detections(self) -> int: ...


class _ListenerCollector(Collector):
    def __init__(self, read: Callable[[], ListenerStatistics]) -> None:
        self._read = read

    def collect(self):  # type: ignore[no-untyped-def]
        stats = self._read()
        yield GaugeMetricFamily(
            "gateway_listener_seconds_since_heard",
            "Seconds since the pub/sub listener last heard from Redis",
            value=stats.seconds_since_heard,
        )
        if stats.canary_round_trip is not None:
            yield GaugeMetricFamily(
                "gateway_listener_lag_seconds",
                "Round trip of the last canary: published, then heard back on the pub/sub "
                "connection",
                value=stats.canary_round_trip,
            )
        yield CounterMetricFamily(
            "gateway_listener_deaf",
            "Times the canary did not come back and the listener was restarted",
            value=stats.deaf_detections,
        )
        yield GaugeMetricFamily(
            "gateway_listener_healthy",
            "1 when the pub/sub listener is healthy",
            value=int(stats.healthy),
        )
        yield GaugeMetricFamily(
            "gateway_subscribed_channels",
            "Redis channels this worker subscribes",
            value=stats.channels,
        )
        yield GaugeMetricFamily(
            "gateway_subscribers",
            "Connections registered with the multiplexer",
            value=stats.subscribers,
        )
