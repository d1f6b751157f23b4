"""What /healthz and /readyz answer: the state of the loops, the dependencies and the group.

Liveness is about this process: every loop thread is alive and has made progress
within GOCLUSTER_LIVENESS_TIMEOUT_S. A dependency that is down does not make the
process unhealthy (restarting it would not bring the broker back); it makes it not
ready. Readiness: the last database and broker probes (consumers/monitor.py)
succeeded recently, the broker accepts our credentials, and the consumer has polled
as a member of its group within GOCLUSTER_READINESS_TIMEOUT_S.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumers.kafka_auth import AUTH_FAILURES, AuthWatch

# kafka-python's MemberState value of a member that has joined and heartbeats.
STABLE = "<stable>"


@dataclass
class LoopState:
    """One loop thread, as it reports itself (`beat`) and as its supervisor sees it."""

    name: str
    clock: Callable[[], float] = time.monotonic
    beat_at: float = field(default_factory=time.monotonic)
    died: str | None = None
    finished: bool = False
    thread: threading.Thread | None = None

    def beat(self) -> None:
        """The loop completed a round (work done, or a failure handled and waited out)."""
        self.beat_at = self.clock()

    def problem(self, timeout_s: float) -> str | None:
        if self.died is not None:
            return f"died: {self.died}"
        if self.finished:
            return None
        if self.thread is not None and not self.thread.is_alive() and self.thread.ident:
            return "thread ended"
        idle = self.clock() - self.beat_at
        if idle > timeout_s:
            return f"no progress for {idle:.0f} s"
        return None


@dataclass
class Probe:
    """The last check of one dependency."""

    ok: bool = False
    at: float | None = None
    error: str | None = "not checked yet"

    def passed(self, at: float) -> None:
        self.ok, self.at, self.error = True, at, None

    def failed(self, at: float, error: str) -> None:
        self.ok, self.at, self.error = False, at, error.splitlines()[0][:300]


@dataclass
class ConsumerStatus:
    """The consumer's group membership after its last poll."""

    state: str = "<unjoined>"
    partitions: int = 0
    stable_poll_at: float | None = None

    def polled(self, state: str, partitions: int, at: float) -> None:
        self.state, self.partitions = state, partitions
        if state == STABLE:
            self.stable_poll_at = at


class Health:
    def __init__(
        self,
        *,
        liveness_timeout_s: float,
        readiness_timeout_s: float,
        auth: AuthWatch = AUTH_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.readiness_timeout_s = readiness_timeout_s
        self.auth = auth
        self.clock = clock
        self.loops: dict[str, LoopState] = {}
        self.database = Probe()
        self.kafka = Probe()
        self.consumer: ConsumerStatus | None = None

    def loop(self, name: str) -> LoopState:
        state = self.loops.get(name)
        if state is None:
            state = self.loops[name] = LoopState(name, self.clock, self.clock())
        return state

    def track_consumer(self) -> ConsumerStatus:
        self.consumer = ConsumerStatus()
        return self.consumer

    def consumer_polled(self, state: str, partitions: int) -> None:
        if self.consumer is not None:
            self.consumer.polled(state, partitions, self.clock())
        if state == STABLE:
            self.auth.succeeded()

    def last_stable_poll(self) -> float | None:
        return None if self.consumer is None else self.consumer.stable_poll_at

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        loops = {
            name: loop.problem(self.liveness_timeout_s) or "ok" for name, loop in self.loops.items()
        }
        return all(v == "ok" for v in loops.values()), {"loops": loops}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "database": self._probe(self.database),
            "kafka": self._kafka(),
        }
        if self.consumer is not None:
            checks["consumer"] = self._consumer(self.consumer)
        return all(v == "ok" for v in checks.values()), {"checks": checks}

    def _probe(self, probe: Probe) -> str:
        if probe.at is None or not probe.ok:
            return probe.error or "failing"
        age = self.clock() - probe.at
        if age > self.readiness_timeout_s:
            return f"not checked for {age:.0f} s"
        return "ok"

    def _kafka(self) -> str:
        failing_for = self.auth.failing_for()
        if failing_for is not None:
            return f"authentication failed ({failing_for:.0f} s): {self.auth.error}"
        return self._probe(self.kafka)

    def _consumer(self, status: ConsumerStatus) -> str:
        if status.stable_poll_at is None:
            return f"not in its group yet ({status.state})"
        age = self.clock() - status.stable_poll_at
        if age > self.readiness_timeout_s:
            return f"no poll in its group for {age:.0f} s ({status.state})"
        return "ok"
