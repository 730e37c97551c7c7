"""SetupGate: the per-worker bound on stream set-ups (admission control)."""

from __future__ import annotations

from quart_gateway.admission.overload import SetupGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_set_ups_in_flight_are_bounded_and_freed_by_leave() -> None:
    gate = SetupGate(max_pending=2)
    assert gate.try_enter()
    assert gate.try_enter()
    assert not gate.try_enter()  # a third would be one too many
    gate.leave()
    assert gate.try_enter()
    stats = gate.statistics()
    assert (stats.pending, stats.refused) == (2, 1)


def test_set_ups_per_second_are_bounded_per_window() -> None:
    clock = Clock()
    gate = SetupGate(max_pending=1000, max_per_second=3, clock=clock)
    for _ in range(3):
        assert gate.try_enter()
        gate.leave()
    assert not gate.try_enter()  # the fourth start within the same second
    clock.now += 0.99
    assert not gate.try_enter()
    clock.now += 0.02  # a new window
    assert gate.try_enter()
    assert gate.statistics().started_last_second == 1


def test_no_rate_bound_by_default() -> None:
    gate = SetupGate(max_pending=10_000)
    for _ in range(5_000):
        assert gate.try_enter()
        gate.leave()
    assert gate.statistics().refused == 0
