"""structlog, configured once at the entry point.

JSON lines when the stream is not a TTY (what log shippers read), a readable
console renderer when it is. Commands whose stdout carries data (`replay`)
log to stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import structlog


def configure_logging(stream: TextIO | None = None, *, level: str = "INFO") -> None:
    out = stream or sys.stdout
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if out.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries (kafka-python, alembic) log through stdlib logging. Their warnings
    # (a broker that went away, a lost coordinator) are what ops need to see during an
    # outage, so they come out in the same format on the same stream, at WARNING and
    # above, each distinct message at most once per RATE_LIMIT_S.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    handler.addFilter(_RateLimit())
    logging.basicConfig(handlers=[handler], level=logging.WARNING, force=True)


RATE_LIMIT_S = 10.0


class _RateLimit(logging.Filter):
    """One line per (logger, message template) per window: a dead broker makes
    kafka-python repeat itself several times a second."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        if now - self._last.get(key, -RATE_LIMIT_S) < RATE_LIMIT_S:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True
