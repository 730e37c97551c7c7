"""The processes under test: a private redis-server, the gateway and the origin baseline.

Servers under test are pinned to core 0 with `taskset`; redis-server shares core 1 with the
load generator. With a single core nothing is pinned.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Literal

import redis

from bench.procinfo import raise_nofile

System = Literal["gateway", "baseline", "uvicorn", "bare"]
# The origin design on two stacks: as the origin wrote it (FastAPI on uvicorn with httptools
# and uvloop) and rendered on the gateway's own stack (Quart on Hypercorn).
BASELINE_MODULES = {
    "baseline": "bench.baselines.origin",
    "uvicorn": "bench.baselines.origin_fastapi",
    "bare": "bench.baselines.bare_hypercorn",  # memory floor: Hypercorn alone (idle scenario)
}
SERVER_CORE = 0
LOAD_CORE = 1
JWT_SECRET = "bench-secret-key-that-is-long-enough-for-hs256-signatures!"
BENCH_CLIENT_NAME = "bench"


def pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *argv]
    return argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_tcp(port: int, deadline: float, process: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


class RedisServer:
    """A private redis-server on its own port, restartable on the same port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--maxclients", "19000",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            pinned(LOAD_CORE, argv), preexec_fn=raise_nofile, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, client_name=BENCH_CLIENT_NAME, socket_timeout=5)

    def kill9(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill9()
            self.process = None

    def server_clients(self) -> int:
        """Connections that are not the benchmark's own (CLIENT LIST)."""
        with self.client() as client:
            listing = client.client_list()
        return sum(1 for entry in listing if entry.get("name") != BENCH_CLIENT_NAME)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


def _socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds (from /proc/<pid>/fd)."""
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening(port: int, pid: int | None = None) -> bool:
    """Whether a socket is in LISTEN on `port` (IPv4 or IPv6), from /proc/net/tcp{,6}.

    With `pid`, only a listening socket held by that process counts: with SO_REUSEPORT the old
    and the new server can both listen on the port at once."""
    needle = f":{port:04X} "
    owned = _socket_inodes(pid) if pid is not None else None
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and (fields[1] + " ").endswith(needle)
                and (owned is None or fields[9] in owned)
            ):
                return True
    return False


class SystemServer:
    """The gateway (`python -m quart_gateway`) or the baseline, one worker on core 0."""

    def __init__(
        self,
        system: System,
        redis_url: str,
        log_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tag: str = "",
    ) -> None:
        self.system = system
        self.redis_url = redis_url
        self.port = port or free_port()
        self.extra_env = env or {}
        self.log_path = log_dir / f"{system}-{self.port}{tag}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting for it to listen (see `wait_ready`)."""
        module = BASELINE_MODULES.get(self.system, "quart_gateway")
        env = {
            **os.environ,
            "PORT": str(self.port),
            "REDIS_URL": self.redis_url,
            "JWT_SECRET_KEY": JWT_SECRET,
            "WEB_CONCURRENCY": "1",
            "MAX_CONNECTIONS_PER_USER": "1000",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            pinned(SERVER_CORE, [sys.executable, "-m", module]),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def wait_ready(self) -> None:
        assert self.process is not None
        _wait_tcp(self.port, time.monotonic() + 30, self.process)
        time.sleep(0.5)  # let start-up work (imports, lifespan) settle before measuring

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def terminate(self) -> None:
        """SIGTERM, as a deploy sends it; does not wait (see `stop`)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
