"""What became of the input records, read from outside the service: the group's committed
offsets against the end of each input partition (records still waiting: a stuck
partition never gets there), and the outbox rows with the service clock at which
each was decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import select

from tests.service_process import wait_until
from workflows.store.database import create_db_engine
from workflows.store.tables import outbox

__all__ = ["outbox_rows", "waiting_records"]


def waiting_records(bootstrap: str, group_id: str, topics: Sequence[str]) -> dict[str, int]:
    """Per input partition ("topic/n"), records after the group's committed offset: not
    yet applied or rejected and committed. Reads the offsets without joining the group."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    try:
        parts = []
        for topic in topics:
            found = wait_until(lambda t=topic: consumer.partitions_for_topic(t), 30, topic)
            parts += [TopicPartition(topic, p) for p in sorted(found)]
        ends = consumer.end_offsets(parts)
        waiting = {}
        for tp in parts:
            committed = consumer.committed(tp) or 0
            waiting[f"{tp.topic}/{tp.partition}"] = max(0, ends[tp] - committed)
        return waiting
    finally:
        consumer.close()


def outbox_rows(url: str) -> list[dict[str, Any]]:
    """Every outbox row; `created_at` is the service clock when the output was decided."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(outbox).order_by(outbox.c.seq)).mappings().all()
    finally:
        engine.dispose()
    return [dict(r) for r in rows]
