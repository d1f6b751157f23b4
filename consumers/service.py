"""`gocluster run`: the event consumer, outbox relay and timer loop, wired and supervised.

Each loop runs in its own thread with its own Kafka client or database
session; a stop event (SIGTERM/SIGINT) lets each finish what it has in hand.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from consumers.bootstrap import App, build
from consumers.config import LOOPS, Settings
from consumers.event_consumer import EventConsumer
from consumers.health import Health, LoopState
from consumers.http_server import serve_http
from consumers.kafka_admin import create_topics
from consumers.kafka_auth import AUTH_FAILURES
from consumers.metrics import Metrics
from consumers.monitor import Monitor
from consumers.outbox_relay import OutboxRelay
from consumers.retention_loop import RetentionLoop
from consumers.retry import Backoff
from consumers.supervision import (
    EXIT_KAFKA_AUTH,
    EXIT_LOOP_DIED,
    EXIT_OK,
    auth_failed_too_long,
    supervised,
)
from consumers.timer_loop import TimerLoop
from workflows.dates import Clock

log = structlog.get_logger("gocluster.service")


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
    progress: LoopState | None = None,
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
        progress=progress,
        # Below the producer's max_request_size by more than the record batch framing.
        max_record_bytes=config["max_request_size"] - 1024,
        lease_s=app.settings.relay_lease_s,
        schema_base=app.settings.schema_base_url,
        tracing=app.tracing,
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
                settings.admin_config(),
                dict.fromkeys(all_topics(settings), partitions),
                configs=settings.topic_configs(),
            )
            if created:
                log.info("topics created", topics=created, partitions=partitions)
            return True
        except KafkaError as exc:
            if auth_failed_too_long(settings):
                return False
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
        health: Health | None = None,
    ) -> None:
        self.app = app
        self.stop = stop
        self.failed = threading.Event()
        self.exit_code = EXIT_OK
        self.metrics = metrics or Metrics.default()
        settings = app.settings
        self.health = health or health_of(settings)
        self._watch_health()
        wake = threading.Event()
        states = {name: self.health.loop(name) for name in (*sorted(loops), "monitor")}
        self.consumer = EventConsumer(
            app.workflow,
            settings.consumer_config(),
            settings.input_topics,
            max_record_bytes=settings.max_record_bytes,
            stop=stop,
            applied=wake,
            poll_timeout_ms=poll_timeout_ms,
            metrics=self.metrics,
            progress=states.get("consumer"),
            on_poll=self.health.consumer_polled,
            tracing=app.tracing,
        )
        # The relay has a stop of its own, set by join() once the consumer and the timer
        # loop have finished: its final flush then publishes their last batch too.
        self.relay_stop = threading.Event()
        self.relay = make_relay(app, self.relay_stop, wake, self.metrics, states.get("relay"))
        self.timers = TimerLoop(
            app.workflow,
            app.clock,
            stop,
            fire_timers=clock_mode == "wall",
            interval_s=timer_interval_s,
            wake=wake,
            metrics=self.metrics,
            progress=states.get("timers"),
        )
        self.monitor = Monitor(
            app,
            self.health,
            self.metrics,
            stop,
            interval_s=settings.gauge_interval_s,
            overdue_by_wall_clock=clock_mode == "wall",
            progress=states["monitor"],
        )
        self.retention = RetentionLoop(
            app.db,
            settings.retention(),
            app.clock,
            stop,
            interval_s=settings.retention_interval_s,
            batch=settings.retention_batch,
            progress=states.get("retention"),
        )
        if "consumer" in loops:
            self.health.track_consumer()
        runs = {
            "consumer": self.consumer.run,
            "relay": self.relay.run,
            "timers": self.timers.run,
            "monitor": self.monitor.run,
            "retention": self.retention.run,
        }
        self.threads = {}
        for name, state in states.items():
            body = supervised(
                runs[name],
                state,
                self.relay_stop if name == "relay" else stop,
                on_death=self._died,
                metrics=self.metrics,
            )
            state.thread = self.threads[name] = threading.Thread(target=body, name=name)

    def _died(self, state: LoopState) -> None:
        """A dead loop stops the service (see consumers/supervision.py)."""
        self.exit_code = EXIT_LOOP_DIED
        self.failed.set()
        self.stop.set()
        if state.name == "relay":
            self.relay_stop.set()

    def _watch_health(self) -> None:
        AUTH_FAILURES.install()
        self.metrics.track(self.metrics.last_poll_age, self.health.last_stable_poll)
        self.metrics.live.set_function(lambda: float(self.health.liveness()[0]))
        self.metrics.ready.set_function(lambda: float(self.health.readiness()[0]))

    def check_auth(self) -> bool:
        """False (and the exit code set) once Kafka has refused us for too long."""
        if auth_failed_too_long(self.app.settings):
            self.exit_code = EXIT_KAFKA_AUTH
            self.stop.set()
            return False
        return True

    def start(self) -> None:
        for thread in self.threads.values():
            thread.start()

    def join(self, timeout_s: float = 60.0) -> None:
        """After `stop`: the consumer and timers finish their batch, then the relay drains."""
        for name in ("consumer", "timers", "monitor", "retention"):
            if name in self.threads:
                self.threads[name].join(timeout_s)
        self.relay_stop.set()
        if "relay" in self.threads:
            self.threads["relay"].join(timeout_s)


def health_of(settings: Settings) -> Health:
    return Health(
        liveness_timeout_s=settings.liveness_timeout_s,
        readiness_timeout_s=settings.readiness_timeout_s,
    )


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
    AUTH_FAILURES.install()
    health = health_of(settings)
    http = serve_http(settings, health)
    try:
        return _run(settings, stop, health, clock_mode, create, partitions, clock, loops)
    finally:
        if http is not None:
            http.stop()


def _run(
    settings: Settings,
    stop: threading.Event,
    health: Health,
    clock_mode: str,
    create: bool,
    partitions: int,
    clock: Clock | None,
    loops: frozenset[str],
) -> int:
    app = build_with_retry(settings, stop, clock=clock)
    if app is None:
        return EXIT_OK
    try:
        if create and not ensure_topics(settings, partitions, stop):
            return EXIT_OK if stop.is_set() else EXIT_KAFKA_AUTH
        service = Service(app, stop, clock_mode=clock_mode, loops=loops, health=health)
        service.start()
        while not stop.wait(0.5) and service.check_auth():
            pass
        service.join()
        log.info(
            "gocluster stopped", published=service.relay.published, exit_code=service.exit_code
        )
        return service.exit_code
    finally:
        app.close()
