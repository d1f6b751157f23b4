"""What every phase of the campaign shares: its configuration, the broker, the private
PostgreSQL server, the record of faults, seeded randomness, progress lines and bounded
waiting."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Context", "say", "seconds_until"]


def seconds_until(
    probe: Callable[[], Any], timeout_s: float, since: float | None = None, interval_s: float = 0.1
) -> float | None:
    """Seconds from `since` (a time.monotonic(); default now) until `probe()` is truthy, or
    None if it was not within `timeout_s`: for a bound, where never is a figure too."""
    began = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return round(time.monotonic() - began, 2)
        time.sleep(interval_s)
    return None


def say(message: str) -> None:
    """Progress on stderr: the campaign runs for minutes."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    """What every phase shares: configuration, the broker, the private PostgreSQL, the
    record of faults, a seeded random source per phase."""

    cfg: Any  # reliability.config.Config
    work: Path
    bootstrap: str
    pg: Any  # PrivatePostgres | None (SQLite backend)
    began: float = field(default_factory=time.monotonic)
    faults: list[dict[str, Any]] = field(default_factory=list)

    def at(self) -> float:
        return round(time.monotonic() - self.began, 2)

    def rng(self, phase: str) -> random.Random:
        return random.Random(f"{self.cfg.seed}:{phase}")

    def new_database(self, name: str) -> str:
        if self.pg is not None:
            return str(self.pg.create_database(name))
        folder = self.work / "db"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / name}.db"

    def logs(self, phase: str) -> Path:
        folder = self.work / "logs" / phase
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def record(self, phase: str, kind: str, **details: Any) -> dict[str, Any]:
        fault = {"n": len(self.faults) + 1, "phase": phase, "kind": kind, "at_s": self.at()}
        fault |= details
        self.faults.append(fault)
        say(f"fault {fault['n']}: {phase} {kind} {details.get('target', '')}".rstrip())
        return fault
