"""The `gocluster` processes a phase starts, pauses, kills and restarts, and what their
logs say.

Processes are `tests.service_process.ServiceProcess` (the same helper the fault
tests use) with an incremental view of their JSON log, because a campaign
process writes one line per applied event and is polled many times a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.service_process import ServiceProcess, wait_until

__all__ = [
    "DEPENDENCY_LOG_EVENTS",
    "Fleet",
    "Proc",
    "applied_twice_in_logs",
    "log_delta",
]

# Service log events that say a dependency is gone (CONTRACT.md: clear log lines).
DEPENDENCY_LOG_EVENTS = (
    "database unreachable at start, retrying",
    "database unavailable, batch will be retried",
    "database unavailable for timers",
    "database unavailable for the outbox",
    "outbox relay could not renew its lease",
    "outbox relay lost its lease while publishing; the new leader sends these "
    "rows again with the same ids",
    "could not mark published rows sent; retrying the marking, not the publishing",
    "kafka unreachable, retrying",
    "kafka unreachable while creating topics, retrying",
    "broker did not acknowledge; retrying",
    "publishing failed",
    "recreating the Kafka producer",
    "offset commit failed; records will be re-delivered and skipped",
    "partitions revoked",
    "partitions assigned",
)


# -- processes -------------------------------------------------------------------------


class Proc(ServiceProcess):
    """A `gocluster` subprocess whose JSON log is scanned incrementally."""

    def __init__(
        self,
        env: Mapping[str, str],
        args: Sequence[str],
        *,
        name: str,
        log_dir: Path | None,
        log_stream: str = "stdout",
    ) -> None:
        super().__init__(env, args, name=name, log_dir=log_dir)
        self.log_stream = log_stream
        self.events: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self.applied: Counter[str] = Counter()  # event id -> "event applied" lines
        self.timers_fired = 0  # by its timer loop ("timers fired" lines)
        self.revoked = 0  # rebalances that took partitions away
        self.started_at = 0.0
        self.killed = False
        self.paused_at = 0.0
        self._scanned = 0

    def start(self) -> Proc:
        super().start()
        self.started_at = time.monotonic()
        return self

    def scan(self) -> None:
        with self._lock:
            lines = self._lines if self.log_stream == "stdout" else self._stderr
            fresh = lines[self._scanned :]
            self._scanned += len(fresh)
        for line in fresh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            event = str(entry.get("event"))
            self.events[event] += 1
            self.last[event] = entry
            if event == "event applied":
                self.applied[str(entry.get("event_id"))] += 1
            elif event == "partitions revoked" and entry.get("partitions"):
                self.revoked += 1  # the first join logs an empty revocation
            elif event == "timers fired":
                self.timers_fired += int(entry.get("count", 0))

    def n(self, event: str) -> int:
        self.scan()
        return self.events[event]

    def partitions(self) -> set[str]:
        """The input partitions of its latest assignment ("topic/n")."""
        self.scan()
        entry = self.last.get("partitions assigned")
        return set(entry["partitions"]) if entry else set()

    def holds_relay_lock(self) -> bool:
        """It logged leadership of the outbox relay and has not lost it since."""
        self.scan()
        got = self.last.get("outbox relay leadership acquired")
        lost = [
            self.last.get(e)
            for e in ("outbox relay leadership released", "outbox relay leadership lost")
        ]
        held = got is not None and all(x is None or x["timestamp"] < got["timestamp"] for x in lost)
        return held and self.alive

    def sigkill(self) -> None:
        self.killed = True
        self.kill()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and sessions but does nothing at all,
        as a process does in a long GC pause, a frozen VM or a stopped container."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused_at = time.monotonic()

    def resume(self) -> float:
        """SIGCONT; returns how long it was paused."""
        os.kill(self.pid, signal.SIGCONT)
        paused = time.monotonic() - self.paused_at
        self.paused_at = 0.0
        return paused


@dataclass
class Fleet:
    """The named processes of one phase: start, kill, restart, and notice crashes."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    args: dict[str, list[str]] = field(default_factory=dict)
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    finished: list[Proc] = field(default_factory=list)
    max_crashes: int = 10

    def start(
        self, role: str, args: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Proc:
        """Start (or restart) a role; `env` adds to the fleet's environment for this role."""
        if args is not None:
            self.args[role] = list(args)
        if env is not None:
            self.extra_env[role] = dict(env)
        self.starts[role] += 1
        proc = Proc(
            self.env | self.extra_env.get(role, {}),
            self.args[role],
            name=f"{role}-{self.starts[role]}",
            log_dir=self.log_dir,
        )
        self.procs[role] = proc.start()
        return proc

    def kill(self, role: str) -> Proc:
        proc = self.procs.pop(role)
        proc.sigkill()
        proc.scan()
        self.finished.append(proc)
        return proc

    def terminate(self, role: str, timeout_s: float = 60.0) -> int:
        """SIGTERM, once the process has installed its handler (it logs "gocluster starting"
        right after): a SIGTERM during interpreter start-up kills it with -15."""
        proc = self.procs[role]
        if proc.args[0] == "run":
            wait_until(lambda: proc.n("gocluster starting") or not proc.alive, 60, "start-up")
        del self.procs[role]
        code = proc.terminate(timeout_s)
        proc.scan()
        self.finished.append(proc)
        return code

    def check(self) -> None:
        """A process that exited on its own is a crash: record it and start it again."""
        for role, proc in list(self.procs.items()):
            if proc.alive:
                continue
            proc.returncode = proc.process.poll() if proc.process else None
            with contextlib.suppress(AssertionError):
                proc.kill(timeout_s=5)
            proc.scan()
            self.crashes.append(
                {"process": proc.name, "returncode": proc.returncode, "tail": proc.tail(15)}
            )
            self.finished.append(proc)
            del self.procs[role]
            if len(self.crashes) > self.max_crashes:
                raise RuntimeError(f"crash loop: {len(self.crashes)} unexpected exits")
            self.start(role)

    def all_procs(self) -> list[Proc]:
        return [*self.finished, *self.procs.values()]

    def close(self) -> None:
        for role in list(self.procs):
            with contextlib.suppress(AssertionError, ProcessLookupError):
                self.kill(role)

    @property
    def runs(self) -> int:
        return sum(self.starts.values())


def applied_twice_in_logs(fleet: Fleet) -> list[str]:
    """Event ids that two "event applied" log lines name, across every process of a fleet:
    the log line follows the commit, so a re-delivered event must log "duplicate" instead."""
    seen: Counter[str] = Counter()
    for proc in fleet.all_procs():
        proc.scan()
        seen.update(proc.applied)
    return sorted(i for i, n in seen.items() if n > 1)


def log_delta(proc: Proc, before: Mapping[str, int], events: Sequence[str] = ()) -> dict[str, int]:
    """Log lines of these events (default: the dependency ones) written since `before`."""
    proc.scan()
    wanted = events or DEPENDENCY_LOG_EVENTS
    return {
        e: n - before.get(e, 0)
        for e, n in proc.events.items()
        if e in wanted and n > before.get(e, 0)
    }
