"""Jittered exponential backoff that resets on success (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.1
    cap: float = 5.0
    attempts: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempts)], never below base / 2."""
        ceiling = min(self.cap, self.base * (2**self.attempts))
        self.attempts = min(self.attempts + 1, 32)
        return max(self.base / 2, self._random.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempts = 0
