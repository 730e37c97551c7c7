from __future__ import annotations

import random

from quart_gateway.aio.backoff import Backoff


def test_backoff_grows_is_capped_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=2.0, _random=random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert max(delays[10:]) > 0.4  # grew beyond the base
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_backoff_is_jittered() -> None:
    backoff = Backoff(base=1.0, cap=100.0)
    samples = set()
    for _ in range(20):
        backoff.attempts = 5
        samples.add(round(backoff.next_delay(), 6))
    assert len(samples) > 10
