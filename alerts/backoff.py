"""Retry delays: exponential backoff with jitter, and the receiver's Retry-After honoured."""
from __future__ import annotations

import random


class Backoff:
    """delay(n) = min(max, initial * 2**n) scaled by a random factor in [0.5, 1] ("equal jitter")."""

    def __init__(self, initial_s: float, max_s: float, retry_after_max_s: float,
                 rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.retry_after_max_s = retry_after_max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max_s)
        base = min(self.max_s, self.initial_s * (2 ** min(attempt, 30)))
        return base * self._rng.uniform(0.5, 1.0)
