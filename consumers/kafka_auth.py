"""Noticing that the broker refuses our credentials.

kafka-python does not raise an authentication failure to its caller: a client's
constructor retries the bootstrap and ends with `KafkaTimeoutError("Unable to
bootstrap")`, exactly as when no broker answers. It does log the failure, with the
exception object among the log record's arguments. A logging handler on the `kafka`
logger picks those out by type, so the service can tell "the broker refuses us"
(readiness fails, one clear line, and the process exits after a bound) from "the
broker is away" (retry for ever).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka.errors import AuthorizationError, SaslAuthenticationFailedError

__all__ = ["AUTH_FAILURES", "AuthWatch"]

# A streak of failures ends when nothing has failed for this long (kafka-python's
# reconnect back-off stays well below it) or when a Kafka request succeeds.
QUIET_S = 300.0


class AuthWatch(logging.Handler):
    """The current streak of authentication (or authorization) failures, if any."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._guard = threading.Lock()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.error: str | None = None
        self.announced = False

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in (*args, record.exc_info[1] if record.exc_info else None):
            if isinstance(arg, SaslAuthenticationFailedError | AuthorizationError):
                self.failed(str(arg))
                return

    def failed(self, error: str) -> None:
        now = time.monotonic()
        with self._guard:
            if self.first_at is None or (self.last_at and now - self.last_at > QUIET_S):
                self.first_at = now
                self.announced = False
            self.last_at = now
            self.error = error.splitlines()[0][:300]

    def succeeded(self) -> None:
        """A request to the broker went through: the credentials work (again)."""
        with self._guard:
            self.first_at = self.last_at = self.error = None
            self.announced = False

    def announce(self) -> bool:
        """True once per streak: the caller logs the one clear line about it."""
        with self._guard:
            first, self.announced = not self.announced, True
            return first

    def failing_for(self) -> float | None:
        """Seconds since the streak began, or None when there is none."""
        now = time.monotonic()
        with self._guard:
            if self.first_at is None or self.last_at is None or now - self.last_at > QUIET_S:
                return None
            return now - self.first_at

    def install(self) -> None:
        kafka_logger = logging.getLogger("kafka")
        if self not in kafka_logger.handlers:
            kafka_logger.addHandler(self)


# One per process, like the logging it listens to.
AUTH_FAILURES = AuthWatch()
