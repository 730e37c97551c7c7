"""The servers the tests run: a private redis-server, and the gateway in-process (Quart test
app, or Hypercorn on a free port) or as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from quart_gateway.app import create_app
from quart_gateway.services import EXTENSION_KEY, Services
from quart_gateway.serving.embedded import EmbeddedRedis, EmbeddedServerError
from quart_gateway.settings import Settings
from tests.support import SECRET, free_port

ROOT = Path(__file__).resolve().parent.parent

SettingsFactory = Callable[..., Settings]
ProcessFactory = Callable[..., Any]


def start_redis(port: int | None = None, args: Sequence[str] = ()) -> EmbeddedRedis:
    try:
        server = EmbeddedRedis(port=port or free_port(), args=args)
    except EmbeddedServerError as exc:
        pytest.exit(f"cannot run the tests: {exc}", returncode=3)
    server.start()
    return server


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Quart]:
    """The app under `test_app()`, so that its lifespan (and the multiplexer) runs."""
    app = create_app(settings)
    async with app.test_app():
        yield app


@dataclass
class Loopback:
    """A gateway listening on a loopback port."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float, failed: Callable[[], str | None]) -> None:
        """Poll /readyz until it answers 200; `failed()` names a reason to give up early."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                reason = failed()
                if reason is not None:
                    raise RuntimeError(f"gateway failed to start: {reason}")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway did not become ready in time")
                await asyncio.sleep(0.02)


@dataclass
class LiveGateway(Loopback):
    app: Quart

    @property
    def services(self) -> Services:
        svc = self.app.extensions[EXTENSION_KEY]
        assert isinstance(svc, Services)
        return svc


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[LiveGateway]:
    """The gateway on a free loopback port, served by Hypercorn in this event loop."""
    app = create_app(settings)
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1.0
    config.websocket_ping_interval = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    gateway = LiveGateway(port, app)
    try:
        await gateway.wait_ready(10, lambda: repr(task.exception()) if task.done() else None)
        yield gateway
    finally:
        if EXTENSION_KEY in app.extensions:
            app.extensions[EXTENSION_KEY].lifecycle.start_draining()
        stop.set()
        await asyncio.wait_for(task, 10)


# --- the gateway as a real process -------------------------------------------------------------


@dataclass
class GatewayProcess(Loopback):
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


async def start_process(
    env: dict[str, str], log_path: Path, port: int | None = None
) -> GatewayProcess:
    port = port or free_port()
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "JWT_SECRET_KEY": SECRET,
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "quart_gateway"],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    log.close()
    gateway = GatewayProcess(port, process, log_path)

    def exited() -> str | None:
        return None if process.poll() is None else gateway.logs()[-2000:]

    try:
        await gateway.wait_ready(20, exited)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"{gateway.logs()[-2000:]}") from None
    return gateway


# --- Redis Sentinel ----------------------------------------------------------------------------


@dataclass
class SentinelTopology:
    """A primary, a replica and three sentinels watching them, all real processes."""

    service: str
    primary: EmbeddedRedis
    replica: EmbeddedRedis
    sentinel_ports: list[int]
    sentinels: list[subprocess.Popen[bytes]]

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", port) for port in self.sentinel_ports)

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait()
        self.replica.cleanup()
        self.primary.cleanup()


def _ask(port: int, *command: str) -> Any:
    import redis

    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def start_sentinel_topology(directory: Path, service: str = "mymaster") -> SentinelTopology:
    """Start the topology and wait until every sentinel knows the primary and its replica."""
    primary = start_redis()
    assert primary.port is not None
    replica = EmbeddedRedis(port=free_port(), args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    ports = [free_port() for _ in range(3)]
    processes = []
    for port in ports:
        conf = directory / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {service} 500\n"
            f"sentinel failover-timeout {service} 3000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        processes.append(
            subprocess.Popen(
                [primary.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    topology = SentinelTopology(service, primary, replica, ports, processes)
    deadline = time.monotonic() + 20
    while True:
        try:
            link = _ask(replica.port or 0, "INFO", "replication").get("master_link_status")
            known = [_ask(p, "SENTINEL", "REPLICAS", service) for p in ports]
            if link == "up" and all(known):
                return topology
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            topology.stop()
            raise RuntimeError("sentinel topology did not come up")
        time.sleep(0.1)


def current_primary_port(topology: SentinelTopology) -> int:
    _host, port = _ask(
        topology.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", topology.service
    )
    return int(port)


# --- Redis Cluster -----------------------------------------------------------------------------


@dataclass
class ClusterTopology:
    """Three primaries and three replicas (`redis-cli --cluster create`), all real processes."""

    nodes: dict[int, EmbeddedRedis]  # by port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{next(iter(self.nodes))}/0"

    def url_avoiding(self, port: int) -> str:
        """The URL of a node other than `port` (a client must not depend on a node we kill)."""
        other = next(p for p in self.nodes if p != port)
        return f"redis://127.0.0.1:{other}/0"

    def first_slot_of(self, port: int) -> int:
        """The lowest slot `port` serves (`redis-cli --cluster reshard` moves those first)."""
        for p, node in self.nodes.items():
            if node.pid is not None:
                return min(
                    int(s) for s, _, m, *_ in _ask(p, "CLUSTER", "SLOTS") if int(m[1]) == port
                )
        raise RuntimeError("no cluster node answers")

    def primaries(self) -> dict[int, str]:
        """Port -> node id of every primary that is up and owns slots."""
        found: dict[int, str] = {}
        for port, node in self.nodes.items():
            if node.pid is None:
                continue
            try:
                lines = _ask(port, "CLUSTER", "NODES")
            except Exception:  # this one is down: ask another
                continue
            for line in str(lines).splitlines():
                fields = line.split()
                if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                    found[int(fields[1].split(":")[1].split("@")[0])] = fields[0]
            return found
        raise RuntimeError("no cluster node answers")

    def owner_of(self, slot: int) -> int:
        """Port of the primary serving `slot`, as a live node sees it."""
        for port, node in self.nodes.items():
            if node.pid is None:
                continue
            for start, end, primary, *_ in _ask(port, "CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        raise RuntimeError(f"slot {slot} is not served")

    def cli(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [cluster_cli(), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout[-2000:]}{done.stderr}")
        return done.stdout

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every running node reports `cluster_state:ok` and agrees on the slot owners."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                alive = [p for p, n in self.nodes.items() if n.pid is not None]
                states = [_ask(p, "CLUSTER", "INFO") for p in alive]
                views = {
                    tuple(sorted((int(s), int(e), int(m[1])) for s, e, m, *_ in
                                 _ask(p, "CLUSTER", "SLOTS")))
                    for p in alive
                }  # fmt: skip
                if all("cluster_state:ok" in str(s) for s in states) and len(views) == 1:
                    return
            except Exception:  # a node not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
            node.cleanup()


def cluster_cli() -> str:
    """`redis-cli` (it creates and reshards the cluster). Without it the tests that need it
    skip, except in CI (`$CI` set), where they fail: CI must not pass without running them."""
    import shutil

    found = shutil.which("redis-cli")
    if found is None:
        reason = "redis-cli is not on PATH (Debian: apt-get install redis-tools)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _cluster_port(taken: set[int]) -> int:
    """A free port P whose bus port P + 10000 is free too (Redis requires P <= 55535), and
    neither of them one of the `taken` ports or their bus ports."""
    import random
    import socket

    while True:
        port = random.randint(20_000, 45_000)
        if {port, port + 10_000} & (taken | {p + 10_000 for p in taken}):
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port


def start_cluster(node_timeout_ms: int = 1000) -> ClusterTopology:
    """Six nodes, created as three primaries with one replica each; waits until healthy."""
    cluster_cli()
    ports: list[int] = []
    for _ in range(6):
        ports.append(_cluster_port(set(ports)))
    nodes: dict[int, EmbeddedRedis] = {}
    topology = ClusterTopology(nodes)
    try:
        for port in ports:
            node = EmbeddedRedis(
                port=port,
                args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-replica-validity-factor", "0",
                ],
            )  # fmt: skip
            node.start()
            nodes[port] = node
        addresses = [f"127.0.0.1:{port}" for port in ports]
        topology.cli("--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes")
        topology.wait_healthy()
        deadline = time.monotonic() + 30
        while True:  # every replica has synced with its primary
            links = [_ask(p, "INFO", "replication").get("master_link_status", "up") for p in ports]
            if all(link == "up" for link in links):
                return topology
            if time.monotonic() > deadline:
                raise RuntimeError("cluster replicas did not sync")
            time.sleep(0.1)
    except BaseException:
        topology.stop()
        raise
