"""`gocluster run`: the event consumer, outbox relay and timer loop, wired and supervised.

Each loop runs in its own thread with its own Kafka client or database
session; a stop event (SIGTERM/SIGINT) lets each finish what it has in hand.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from consumers.bootstrap import App, build
from consumers.config import Settings
from consumers.event_consumer import EventConsumer
from consumers.kafka_admin import create_topics
from consumers.metrics import Metrics
from consumers.outbox_relay import OutboxRelay
from consumers.retry import Backoff
from consumers.timer_loop import TimerLoop
from workflows.dates import Clock

log = structlog.get_logger("gocluster.service")

# The three loops; `gocluster run --only` runs a subset (e.g. a separate relay process).
LOOPS = frozenset({"consumer", "relay", "timers"})


def stream_topics(settings: Settings) -> dict[str, str]:
    return {
        "labels": settings.topic_labels,
        "deadlines": settings.topic_deadlines,
        "membership": settings.topic_membership,
        "dlq": settings.topic_dlq,
    }


def all_topics(settings: Settings) -> list[str]:
    return [*settings.input_topics, *stream_topics(settings).values()]


def make_relay(
    app: App,
    stop: threading.Event,
    wake: threading.Event | None = None,
    metrics: Metrics | None = None,
) -> OutboxRelay:
    config = app.settings.producer_config()
    return OutboxRelay(
        app.db,
        lambda: KafkaProducer(**config),
        stream_topics(app.settings),
        app.clock,
        stop,
        wake,
        metrics=metrics,
    )


def build_with_retry(settings: Settings, stop: threading.Event, **kwargs: Any) -> App | None:
    """The database may be down when the service starts: wait for it, visibly."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            return build(settings, **kwargs)
        except SQLAlchemyError as exc:
            delay = backoff.wait(stop)
            log.error(
                "database unreachable at start, retrying",
                database=settings.redacted_database_url(),
                error=str(exc).splitlines()[0][:300],
                retry_in_s=round(delay, 1),
            )
    return None


def ensure_topics(settings: Settings, partitions: int, stop: threading.Event) -> bool:
    backoff = Backoff()
    while not stop.is_set():
        try:
            created = create_topics(
                settings.admin_config(), dict.fromkeys(all_topics(settings), partitions)
            )
            if created:
                log.info("topics created", topics=created, partitions=partitions)
            return True
        except KafkaError as exc:
            delay = backoff.wait(stop)
            log.warning(
                "kafka unreachable while creating topics, retrying",
                error=repr(exc),
                retry_in_s=round(delay, 1),
            )
    return False


class Service:
    def __init__(
        self,
        app: App,
        stop: threading.Event,
        *,
        clock_mode: str = "wall",
        poll_timeout_ms: int = 500,
        timer_interval_s: float = 1.0,
        loops: frozenset[str] = LOOPS,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.stop = stop
        self.failed = threading.Event()
        self.metrics = metrics or Metrics()
        wake = threading.Event()
        settings = app.settings
        self.consumer = EventConsumer(
            app.workflow,
            settings.consumer_config(),
            settings.input_topics,
            max_record_bytes=settings.max_record_bytes,
            stop=stop,
            applied=wake,
            poll_timeout_ms=poll_timeout_ms,
            metrics=self.metrics,
        )
        # Fix: the relay used to stop together with the consumer and the timer loop, so
        # its final flush often ran before their last batch committed, and a graceful
        # stop left those outputs unpublished until the next start. It now has its own
        # stop, set by join() once the other two have finished.
        self.relay_stop = threading.Event()
        self.relay = make_relay(app, self.relay_stop, wake, self.metrics)
        self.timers = TimerLoop(
            app.workflow,
            app.clock,
            stop,
            fire_timers=clock_mode == "wall",
            interval_s=timer_interval_s,
            wake=wake,
            metrics=self.metrics,
        )
        self.threads = {
            name: threading.Thread(target=self._guard(loop), name=name)
            for name, loop in (
                ("consumer", self.consumer.run),
                ("relay", self.relay.run),
                ("timers", self.timers.run),
            )
            if name in loops
        }

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except Exception:
                log.exception(
                    "loop failed; stopping the service", loop=threading.current_thread().name
                )
                self.failed.set()
                self.stop.set()
                self.relay_stop.set()

        return run

    def start(self) -> None:
        for thread in self.threads.values():
            thread.start()

    def join(self, timeout_s: float = 60.0) -> None:
        """After `stop`: the consumer and timers finish their batch, then the relay drains."""
        for name in ("consumer", "timers"):
            if name in self.threads:
                self.threads[name].join(timeout_s)
        self.relay_stop.set()
        if "relay" in self.threads:
            self.threads["relay"].join(timeout_s)


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: Any) -> None:
        log.info("stop requested; finishing the batch in hand", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(
    settings: Settings,
    *,
    clock_mode: str,
    create: bool,
    partitions: int,
    clock: Clock | None = None,
    loops: frozenset[str] = LOOPS,
) -> int:
    stop = threading.Event()
    install_signal_handlers(stop)
    log.info(
        "gocluster starting",
        clock=clock_mode,
        loops=sorted(loops),
        config=settings.safe_summary(),
    )
    app = build_with_retry(settings, stop, clock=clock)
    if app is None:
        return 0
    try:
        if create and not ensure_topics(settings, partitions, stop):
            return 0
        service = Service(app, stop, clock_mode=clock_mode, loops=loops)
        if settings.metrics_port is not None:
            service.metrics.serve(settings.metrics_port, settings.metrics_host)
            log.info("metrics served", port=settings.metrics_port, host=settings.metrics_host)
        service.start()
        while not stop.wait(0.5):
            pass
        service.join()
        log.info("gocluster stopped", published=service.relay.published)
        return 1 if service.failed.is_set() else 0
    finally:
        app.close()
