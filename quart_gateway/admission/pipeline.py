"""Admission: whether a new `/ws` or `/events` stream may open, decided once for both.

    set-up slot ─> origin (/ws) ─> draining ─> credentials ─> connection lease ─> admitted

Each step either passes or refuses with an entry of the disconnect catalogue, in this order
on both transports; each refusal is counted here, and logged except while draining. A
transport only renders the verdict: `/ws` accepts and closes with the catalogue code
(browsers cannot see why a handshake was refused); `/events` answers the refusal's HTTP
error, or, when there is none (draining), a 200 with a farewell, because EventSource gives
up on any non-200.

`admit()` is an async context manager: the set-up slot (admission control, overload.py) and
the connection lease it takes are given back when the block exits, however it exits; the slot
earlier, at `Admitted.set_up()`, once `connected` has been sent.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Literal

from quart_gateway.admission.auth import Principal
from quart_gateway.admission.overload import SetupGate
from quart_gateway.errors import AuthError, GatewayError, TooManyConnectionsError
from quart_gateway.live import disconnect
from quart_gateway.ops import logs
from quart_gateway.services import Services

logger = logging.getLogger(__name__)

Transport = Literal["ws", "sse"]

# Retry-After of a 429 too_many_connections on /events: long enough for a tab to close.
TOO_MANY_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Attempt:
    """What admission reads from a request to open a stream."""

    transport: Transport
    origin: str | None
    token: str | None  # `Authorization: Bearer`
    ticket: str | None = None  # `?ticket=`: a single-use stream ticket (admission/tickets.py)
    query_token: str | None = None  # `?token=`: refused unless ALLOW_QUERY_TOKENS


class _Slot:
    """One set-up slot of the worker's `SetupGate`, released once."""

    __slots__ = ("_gate",)

    def __init__(self, gate: SetupGate) -> None:
        self._gate: SetupGate | None = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate.leave()
            self._gate = None


@dataclass(frozen=True, slots=True)
class Admitted:
    principal: Principal
    lease: str
    slot: _Slot

    def set_up(self) -> None:
        """The stream is set up (`connected` sent): its set-up slot is free for the next."""
        self.slot.release()


@dataclass(frozen=True, slots=True)
class Refused:
    ending: disconnect.Ending
    # The HTTP answer on /events; None: answer 200 and end the stream with `ending`.
    error: GatewayError | None


def admit(svc: Services, attempt: Attempt) -> Admission:
    """`async with admit(svc, attempt) as verdict`: an `Admitted` or a `Refused`."""
    return Admission(svc, attempt)


class Admission:
    """The async context manager of `admit()`. A slotted class rather than an
    `@asynccontextmanager`: one lives as long as each stream (0.5 KiB less per connection)."""

    __slots__ = ("_attempt", "_held", "_slot", "_svc")

    def __init__(self, svc: Services, attempt: Attempt) -> None:
        self._svc = svc
        self._attempt = attempt
        self._slot: _Slot | None = None
        self._held: Admitted | None = None

    async def __aenter__(self) -> Admitted | Refused:
        if self._slot is not None or self._held is not None:
            raise RuntimeError("an admission is entered once")
        svc, attempt = self._svc, self._attempt
        if not svc.setup_gate.try_enter():
            return _refused(svc, attempt, Refused(disconnect.OVERLOADED, None))
        slot = self._slot = _Slot(svc.setup_gate)
        try:
            verdict = await _decide(svc, attempt, slot)
        except BaseException:
            slot.release()
            raise
        if isinstance(verdict, Refused):
            slot.release()
            return _refused(svc, attempt, verdict)
        svc.connection_limiter.hold(verdict.principal.user_id, verdict.lease)
        self._held = verdict
        return verdict

    async def __aexit__(self, *exc_info: object) -> None:
        held, self._held = self._held, None
        try:
            if held is not None:
                self._svc.connection_limiter.release(held.principal.user_id, held.lease)
        finally:
            if self._slot is not None:
                self._slot.release()


def _refused(svc: Services, attempt: Attempt, verdict: Refused) -> Refused:
    svc.metrics.rejected.labels(transport=attempt.transport, reason=verdict.ending.reason).inc()
    return verdict


async def _decide(svc: Services, attempt: Attempt, slot: _Slot) -> Admitted | Refused:
    # On /events the browser enforces CORS itself: the stream just lacks the headers.
    if attempt.transport == "ws" and not svc.cors.allows(attempt.origin):
        logger.info("stream from an origin not allowed", extra={"origin": attempt.origin})
        return Refused(disconnect.ORIGIN_NOT_ALLOWED, None)
    if svc.lifecycle.draining:  # before the credential: a bounce costs no JWT or ticket
        return Refused(disconnect.SHUTDOWN, None)
    try:
        principal = await _principal(svc, attempt)
    except AuthError as exc:
        logger.info("stream refused: %s", exc.message)
        return Refused(disconnect.INVALID_TOKEN, exc)
    logs.bind(user_id=principal.user_id)
    lease = uuid.uuid4().hex
    if not await svc.connection_limiter.acquire(principal.user_id, lease):
        logger.info("stream refused: too many connections")
        return Refused(
            disconnect.TOO_MANY_CONNECTIONS,
            TooManyConnectionsError(retry_after=TOO_MANY_RETRY_AFTER_SECONDS),
        )
    return Admitted(principal, lease, slot)


async def _principal(svc: Services, attempt: Attempt) -> Principal:
    """The user of the attempt's credential: the header's JWT, else the ticket, else the
    query's JWT (only while ALLOW_QUERY_TOKENS)."""
    if attempt.token is not None:
        return await svc.verifier.verify(attempt.token)
    if attempt.ticket is not None:
        return await svc.tickets.redeem(attempt.ticket)
    if attempt.query_token is not None and not svc.settings.allow_query_tokens:
        raise AuthError("Tokens in URLs are not accepted; use a stream ticket")
    return await svc.verifier.verify(attempt.query_token)
