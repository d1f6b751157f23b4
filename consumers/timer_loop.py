"""Fire due timers by the service clock, release parked events whose wake-up has come,
and expire parked events past their TTL.

With `--clock event` only the parked events are looked after here; deadlines
then fire by event time and `gocluster tick`. Under the wall clock a breach
waits for the policy's late_result_allowance.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy.exc import SQLAlchemyError

from consumers.event_consumer import outputs_by_cause
from consumers.health import LoopState
from consumers.metrics import Metrics
from consumers.retry import Backoff
from workflows.dates import Clock
from workflows.engine import BatchResult, Workflow

log = structlog.get_logger("gocluster.timers")


class TimerLoop:
    def __init__(
        self,
        workflow: Workflow,
        clock: Clock,
        stop: threading.Event,
        *,
        fire_timers: bool = True,
        interval_s: float = 1.0,
        wake: threading.Event | None = None,
        metrics: Metrics | None = None,
        progress: LoopState | None = None,
    ) -> None:
        self.workflow = workflow
        self.progress = progress  # liveness: beats after every round
        self.metrics = metrics
        self.clock = clock
        self.stop = stop
        self.fire_timers = fire_timers
        self.interval_s = interval_s
        self.wake = wake or threading.Event()  # tells the relay there is output
        self.backoff = Backoff()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.progress is not None:
                self.progress.beat()
            try:
                busy = self.step()
                self.backoff.reset()
            except SQLAlchemyError as exc:
                delay = self.backoff.next_delay()
                log.error(
                    "database unavailable for timers",
                    error=str(exc).splitlines()[0],
                    retry_in_s=round(delay, 1),
                )
                self.stop.wait(delay)
                continue
            if not busy:
                self.stop.wait(self._idle_wait())

    def _idle_wait(self) -> float:
        """Sleep the interval, or less when a timer comes due before it ends: a timer
        fires within a round's time of its due time, not up to an interval late."""
        if not self.fire_timers:
            return self.interval_s
        now = self.clock.now()
        try:
            upcoming = self.workflow.next_timer_due(after=now)
        except SQLAlchemyError:
            return self.interval_s  # the next round reports the database
        if upcoming is None:
            return self.interval_s
        return min(self.interval_s, max(0.0, (upcoming - now).total_seconds()))

    def step(self) -> bool:
        """One round; True when there may be more due right away."""
        now = self.clock.now()
        released = self.workflow.release_parked(now=now)  # before the timers they precede
        self._log_released(released)
        busy = released.clusters_woken > 0
        if self.fire_timers:
            fired = self.workflow.fire_due_timers(until=now, allow_late_results=True)
            self._log(fired)
            busy = busy or fired.timers_fired > 0
        expired = self.workflow.expire_parked(now=now)
        self._log(expired)
        return busy or bool(expired.rejections)

    def _log(self, result: BatchResult, rejected: str = "parked event expired to DLQ") -> None:
        if self.metrics is not None:
            self.metrics.observe(result)
        if result.timers_fired:
            outputs = [x for xs in outputs_by_cause(result.outputs).values() for x in xs]
            log.info("timers fired", count=result.timers_fired, outputs=outputs)
        for r in result.rejections:
            log.warning(
                rejected,
                error_class=r.error_class.value,
                cluster_id=r.cluster_id,
                event_id=r.event_id,
                error=r.message,
            )
        if result.outputs or result.rejections:
            self.wake.set()

    def _log_released(self, result: BatchResult) -> None:
        if result.clusters_woken:
            log.info(
                "parked events released",
                clusters=result.clusters_woken,
                applied=result.count("applied"),
                outputs=len(result.outputs),
            )
        self._log(result, rejected="released parked event rejected to DLQ")
