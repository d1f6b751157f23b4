"""Is any broker answering? A bounded check for one-shot commands (`tick`), so that a
missing broker is one clear line after a few seconds, not a minute of library errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from consumers.config import Settings
from consumers.kafka_auth import AuthWatch


def unreachable(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """None when a broker answers a metadata request within `timeout_s`; else why not."""
    watch = AuthWatch()
    timeout_ms = int(timeout_s * 1000)
    config = settings.admin_config() | {
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
    }
    with _quiet_kafka(watch):
        try:
            admin = KafkaAdminClient(**config)
        except (KafkaError, OSError) as exc:
            if watch.error is not None:
                return f"the broker refused the credentials ({watch.error})"
            return f"no broker answers at {settings.kafka_bootstrap} within {timeout_s:g} s ({exc})"
        with contextlib.suppress(Exception):
            admin.close()
    return None


@contextlib.contextmanager
def _quiet_kafka(watch: AuthWatch) -> Iterator[None]:
    """kafka-python's retries log many lines a second; keep them (and see auth failures)."""
    kafka_logger = logging.getLogger("kafka")
    level, propagate = kafka_logger.level, kafka_logger.propagate
    kafka_logger.setLevel(logging.WARNING)
    kafka_logger.propagate = False
    kafka_logger.addHandler(watch)
    try:
        yield
    finally:
        kafka_logger.removeHandler(watch)
        kafka_logger.setLevel(level)
        kafka_logger.propagate = propagate
