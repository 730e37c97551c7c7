"""Admission control: a bound on the stream set-ups one worker runs at once.

A restart sends every client of a worker to the others at the same moment. Setting up a
stream (token check, lease, subscription, cursor) costs about a millisecond of CPU, so
thousands arriving together would saturate the worker, and the streams already open would
wait behind the handshakes. Past `ADMISSION_MAX_PENDING` set-ups in flight, or
`ADMISSION_MAX_PER_SECOND` started in the last second, a new stream is turned away with
`overloaded` and a jittered delay (SSE: 200 with `retry:`; WS: 1013), so that clients come
back spread out instead of all retrying at once. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GateStatistics:
    pending: int
    started_last_second: int
    refused: int


class SetupGate:
    def __init__(
        self,
        max_pending: int,
        max_per_second: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_pending = max_pending
        self._max_per_second = max_per_second  # 0: no rate bound
        self._clock = clock
        self._pending = 0
        self._window_start = clock()
        self._started = 0
        self._refused = 0

    def try_enter(self) -> bool:
        """Take a set-up slot; False when the worker already has enough on its hands.
        Every True must be followed by exactly one `leave()`."""
        if self._pending >= self._max_pending or not self._within_rate():
            self._refused += 1
            return False
        self._pending += 1
        self._started += 1
        return True

    def leave(self) -> None:
        self._pending -= 1

    def statistics(self) -> GateStatistics:
        self._within_rate()  # rolls the window
        return GateStatistics(self._pending, self._started, self._refused)

    def _within_rate(self) -> bool:
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._started = 0
        return not self._max_per_second or self._started < self._max_per_second
