"""structlog, configured once at the entry point.

JSON lines when the stream is not a TTY (what log shippers read), a readable
console renderer when it is. Commands whose stdout carries data (`replay`)
log to stderr.
"""

from __future__ import annotations

import logging
import sys
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
    # Libraries (kafka-python, alembic) log through stdlib logging: keep them quiet
    # on the data stream and at WARNING, since their INFO is per-connection chatter.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True)
