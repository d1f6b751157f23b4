"""Capped exponential backoff for dependencies that come and go."""

from __future__ import annotations

import random
import threading


class Backoff:
    """1 s, 2 s, 4 s ... capped, with jitter; reset after a success."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2 ** min(self.failures, 16)))
        self.failures += 1
        return float(delay * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.failures = 0

    def wait(self, stop: threading.Event) -> float:
        """Sleep the next delay unless asked to stop; returns the delay."""
        delay = self.next_delay()
        stop.wait(delay)
        return delay
