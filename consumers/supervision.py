"""Each loop's failure policy, in one place (consumer, relay, timers, monitor alike).

- Retried with back-off, the loop staying alive: database errors (SQLAlchemyError),
  a concurrent writer that won (StaleAggregate), broker errors (KafkaError) and
  network errors (OSError). The loop's round starts again with fresh clients;
  /readyz shows the dependency that is down.
- Kafka refusing our credentials (SASL, authorization) is retried too, while
  /readyz fails with the reason and one "kafka authentication failed" line is
  logged; when it lasts GOCLUSTER_KAFKA_AUTH_FAILURE_EXIT_S the process stops with
  exit code 77 (EX_NOPERM): a restart does not fix a password.
- Anything else is a bug: the loop is dead. One "loop died" line with the loop's
  name and the traceback, /healthz answers 503 naming it, the other loops finish
  what they hold, the relay drains, and the process exits 70 (EX_SOFTWARE) for its
  supervisor (systemd `Restart=on-failure`, a Kubernetes liveness probe) to restart.

Loops handle their usual failures themselves (the consumer rewinds a batch the
database refused; the relay keeps unacknowledged rows); this is the policy for
what escapes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from consumers.config import Settings
from consumers.health import LoopState
from consumers.kafka_auth import AUTH_FAILURES
from consumers.metrics import Metrics
from consumers.retry import Backoff
from workflows.store.aggregates import StaleAggregate

log = structlog.get_logger("gocluster.service")

EXIT_OK = 0
EXIT_LOOP_DIED = 70  # sysexits EX_SOFTWARE: a bug; a restart may get past it
EXIT_KAFKA_AUTH = 77  # sysexits EX_NOPERM: the broker refuses the credentials

# Retried with back-off: dependencies that come and go, and lost races.
TRANSIENT: tuple[type[BaseException], ...] = (SQLAlchemyError, StaleAggregate, KafkaError, OSError)


def supervised(
    loop: Callable[[], None],
    state: LoopState,
    stop: threading.Event,
    *,
    on_death: Callable[[LoopState], None],
    metrics: Metrics | None = None,
    backoff: Backoff | None = None,
) -> Callable[[], None]:
    """The thread body of one loop: `loop()` runs until `stop`, under the policy above."""
    backoff = backoff or Backoff()

    def run() -> None:
        while True:
            try:
                loop()
            except TRANSIENT as exc:
                if metrics is not None:
                    metrics.loop_failures.labels(state.name, "transient").inc()
                delay = backoff.next_delay()
                log.error(
                    "loop round failed; retrying",
                    loop=state.name,
                    error=describe(exc),
                    retry_in_s=round(delay, 1),
                )
                stop.wait(delay)
                state.beat()
                if stop.is_set():
                    break
                continue
            except Exception as exc:
                if metrics is not None:
                    metrics.loop_failures.labels(state.name, "fatal").inc()
                state.died = describe(exc)
                log.exception(
                    "loop died; stopping the service",
                    loop=state.name,
                    error=state.died,
                    exit_code=EXIT_LOOP_DIED,
                )
                on_death(state)
                return
            break
        state.finished = True

    return run


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a log field or a probe answer."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def auth_failed_too_long(settings: Settings) -> bool:
    """Kafka refuses our credentials: say so once per streak; True past the bound."""
    failing_for = AUTH_FAILURES.failing_for()
    if failing_for is None:
        return False
    bound = settings.kafka_auth_failure_exit_s
    if AUTH_FAILURES.announce():
        log.error(
            "kafka authentication failed: the broker refuses these credentials",
            error=AUTH_FAILURES.error,
            security_protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            hint="check GOCLUSTER_KAFKA_SASL_USERNAME / _PASSWORD (and the broker's ACLs)",
            exit_in_s=round(max(0.0, bound - failing_for)),
        )
    if failing_for < bound:
        return False
    log.error(
        "giving up: kafka authentication has failed for too long",
        failing_for_s=round(failing_for),
        bound_s=bound,
        exit_code=EXIT_KAFKA_AUTH,
    )
    return True
