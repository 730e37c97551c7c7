"""Serving the gateway: `python -m quart_gateway` (the Procfile's `web:`) runs `main()`.

It adds what `hypercorn --workers` lacks: on SIGTERM each worker first drains (WebSockets
close with 1012, SSE streams get a farewell and a jittered `retry:`), then lets Hypercorn stop,
all within SHUTDOWN_GRACE_SECONDS. With WEB_CONCURRENCY > 1 this process supervises that many
worker processes sharing one listening socket; each worker has its own multiplexer.

With no REDIS_URL, this process starts the embedded server once and every worker uses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TypeVar

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.utils import wrap_app

from quart_gateway.aio.backoff import Backoff
from quart_gateway.app import create_app
from quart_gateway.errors import ConfigError
from quart_gateway.ops import logs, metrics_group
from quart_gateway.ops.metrics_group import GroupMember
from quart_gateway.services import EXTENSION_KEY, Services
from quart_gateway.serving.embedded import EmbeddedRedis, EmbeddedServerError, start_embedded
from quart_gateway.settings import Secret, Settings

logger = logging.getLogger("quart_gateway")

GC_THRESHOLD = (700, 10, 100)  # Python's default is (700, 10, 10)
STREAM_PATHS = frozenset({"/ws", "/ws/", "/events"})

T = TypeVar("T")


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"0.0.0.0:{settings.port}"]
    config.accesslog = logging.getLogger("hypercorn.access")
    config.errorlog = logging.getLogger("hypercorn.error")
    config.access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
    # No protocol-level pings: Hypercorn would run a task per connection to send them and
    # never checks the pongs. The gateway's own `ping` message every heartbeat interval does
    # the same work on both transports, and tune_sockets() makes the kernel drop a peer that
    # stops acknowledging it.
    config.websocket_ping_interval = None
    config.backlog = 4096  # bursts of reconnecting clients after a deploy
    config.websocket_max_message_size = 64 * 1024  # clients send nothing that needs more
    # After SIGTERM the listener closes at once and Hypercorn waits this long for the streams,
    # which the drain ends spread over most of it; it then cancels what is left.
    config.graceful_timeout = drain_budget(settings)
    config.logger_class = _Logger
    return config


class _Logger(HypercornLogger):
    """Hypercorn's logger, without access-log lines for the streams the two stream routes
    accept (200, 101): they cost about 5 % of a WebSocket set-up, and streams are counted and
    logged by the gateway. Refusals (401, 429) are still logged."""

    async def access(self, request: Any, response: Any, request_time: float) -> None:
        status = response.get("status") if response else None
        if request.get("path") not in STREAM_PATHS or status not in (101, 200):
            await super().access(request, response, request_time)


def listening_sockets(settings: Settings) -> Sockets:
    """The TCP listening socket on $PORT, with SO_REUSEPORT: a replacement process can bind
    the port while this one still drains (Hypercorn sets it only for its own workers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", settings.port))
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    tune_sockets(sockets, settings)
    return sockets


def tune_sockets(sockets: Sockets, settings: Settings) -> None:
    """Dead-peer detection for every connection accepted on these listening sockets.

    TCP_USER_TIMEOUT closes a connection whose sent data stays unacknowledged this long. The
    gateway sends every client a `ping` each heartbeat interval, so a peer that vanished
    without a reset (a laptop lid closed, a mobile network gone) is dropped within about three
    intervals, instead of after the kernel's default of about 15 minutes of retransmissions.
    Accepted sockets inherit the option from the listening socket (Linux).
    """
    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    # Never below 10 s: a short heartbeat (tests, demos) must not make slow links fatal.
    timeout_ms = max(10_000, int(3 * settings.heartbeat_interval_seconds * 1000))
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)


def drain_spread(settings: Settings) -> float:
    """Seconds over which the open streams are ended after SIGTERM: most of the drain budget,
    leaving the rest for the last farewells to be written and the clients to leave."""
    return 0.6 * drain_budget(settings)


def drain_budget(settings: Settings) -> float:
    """Seconds for open streams to end after SIGTERM; the rest of the grace is for Hypercorn's
    own graceful close (1 s) and the lifespan's teardown."""
    return max(0.2, settings.shutdown_grace_seconds - 2.5)


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Python 3.11's asyncio streams call task.exception() on a connection task that Hypercorn
    # cancelled at shutdown, which raises CancelledError into the loop's handler: one ERROR
    # line per open connection on every clean restart, and nothing to act on.
    exc = context.get("exception")
    if isinstance(exc, asyncio.CancelledError) or (
        # A peer dropped by the kernel (TCP_USER_TIMEOUT, reset) surfaces again when Hypercorn
        # closes the connection: routine for mobile clients, not an error of ours.
        isinstance(exc, OSError)
        and str(context.get("message", "")).startswith("Unhandled exception in client_connected")
    ):
        logger.debug("ignored: %s (%r)", context.get("message"), exc)
        return
    loop.default_exception_handler(context)


async def _report_drain(svc: Services, budget: float) -> None:
    started = time.monotonic()
    drained = await svc.lifecycle.wait_drained(budget)
    logger.info("drained in %.2fs", time.monotonic() - started, extra={"complete": drained})


def _hard_exit() -> None:
    # Last resort. Hypercorn waits for every open TCP connection before it returns (without
    # a bound on Python 3.12+), and a client that stopped reading keeps its connection open.
    logger.error("shutdown grace period exceeded; exiting now")
    logging.shutdown()
    os._exit(1)


async def serve(
    settings: Settings, sockets: Sockets | None = None, group: GroupMember | None = None
) -> None:
    """Serve one worker until SIGTERM/SIGINT, then drain and stop. `group`: the worker is one
    of several, and its /metrics reports them all."""
    app = create_app(settings)
    if group is not None:
        metrics_group.install(app, group)
    config = hypercorn_config(settings)
    if sockets is None:
        sockets = listening_sockets(settings)
    # Start-up objects (modules, the app) never become garbage: keep them out of every
    # collection, so that collections scale with connections, not with the code base.
    gc.collect()
    gc.freeze()
    # Full collections walk every live connection's objects: at 18k connections they took
    # most of a set-up burst's CPU. Connections form few reference cycles, so the oldest
    # generation is collected ten times less often.
    gc.set_threshold(GC_THRESHOLD[0], GC_THRESHOLD[1], GC_THRESHOLD[2])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_exception_handler)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    drain_tasks: set[asyncio.Task[None]] = set()

    async def shutdown_trigger() -> None:
        await stop.wait()
        loop.call_later(settings.shutdown_grace_seconds, _hard_exit)
        svc: Services | None = app.extensions.get(EXTENSION_KEY)
        if svc is not None:
            svc.lifecycle.start_draining(spread=drain_spread(settings))
            task = asyncio.create_task(_report_drain(svc, drain_budget(settings)))
            drain_tasks.add(task)
            task.add_done_callback(drain_tasks.discard)
        # Returning closes the listener at once: reconnects go to the replacement or to the
        # other instances, not back to this one. Hypercorn then waits up to graceful_timeout
        # for the open streams, which the drain ends spread over the window.

    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=shutdown_trigger,
    )


def run_worker(
    settings: Settings, sockets: Sockets | None = None, group: GroupMember | None = None
) -> None:
    logs.configure(settings.log_level, settings.log_format)
    logs.bind(worker=str(os.getpid()))
    run_loop(serve(settings, sockets, group))


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (the `speed` extra), else on asyncio's loop.

    The import is settled before the loop runs: run inside `except ImportError`, every
    traceback of the worker would begin with "No module named 'uvloop'".
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def supervise(settings: Settings) -> int:
    """Run WEB_CONCURRENCY workers on shared sockets; restart crashed ones (their counters stay
    in the group's metrics); forward SIGTERM."""
    sockets = listening_sockets(settings)
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    # The workers' metrics snapshots, merged by whichever worker answers GET /metrics.
    metrics_dir = tempfile.mkdtemp(prefix="quart-gateway-metrics-")
    members: dict[BaseProcess, GroupMember] = {}

    def start_worker() -> BaseProcess:
        member = GroupMember(metrics_dir, f"worker-{len(members)}")
        process = ctx.Process(
            target=run_worker, args=(settings, sockets, member), name="gateway-worker"
        )
        process.start()
        members[process] = member
        return process

    def retire(process: BaseProcess) -> None:
        # Its gauges go, its counters stay in the group's totals: they never go down.
        try:
            metrics_group.retire(members[process])
        except (OSError, ValueError) as exc:
            logger.warning("cannot retire the metrics of worker %s: %s", process.pid, exc)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # children inherit this: the parent decides
    workers = [start_worker() for _ in range(settings.web_concurrency)]
    started = [time.monotonic()] * len(workers)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("started %d workers", len(workers))
    backoff = Backoff(base=0.5, cap=10.0)
    try:
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(workers):
                if process.is_alive() or stopping:
                    continue
                logger.error("worker %s exited with %s; restarting", process.pid, process.exitcode)
                retire(process)
                if time.monotonic() - started[i] > 60:
                    backoff.reset()  # it had been running fine: a new problem
                time.sleep(backoff.next_delay())  # a worker that cannot start must not spin
                if not stopping:
                    workers[i] = start_worker()
                    started[i] = time.monotonic()
    finally:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        # Each worker exits by itself within the grace period; this is the backstop.
        deadline = time.monotonic() + settings.shutdown_grace_seconds + 1.0
        for process in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        for sock in sockets.insecure_sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"quart_gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    embedded: EmbeddedRedis | None = None
    if settings.embedded:
        try:
            embedded = start_embedded(settings)
        except EmbeddedServerError as exc:
            print(f"quart_gateway: {exc}", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, redis_url=Secret(embedded.url))
    try:
        if settings.web_concurrency == 1:
            run_worker(settings)
            return 0
        return supervise(settings)
    finally:
        if embedded is not None:
            embedded.cleanup()
