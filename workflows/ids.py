"""Deterministic identifiers.

Every id the service mints is a name-based UUID of what caused it, so a replay,
a crash-restart or a rebalance re-derives the same ids and downstream can
deduplicate on them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

_NAMESPACE = uuid.UUID("5d1f3c2e-7a0b-4f7e-9a51-2c6b1e0d9f41")


def _name(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def event_key(source: str, event_id: str) -> str:
    """An input event is identified by (source, id)."""
    return f"{source}\x1f{event_id}"


def output_id(cause_key: str, index: int) -> str:
    return _name("output", cause_key, index)


def timer_id(cluster_id: str, kind: str, ref: str, due_at: datetime, days_left: int | None) -> str:
    return _name("timer", cluster_id, kind, ref, due_at.isoformat(), days_left)


def label_id(cluster_id: str, level: str, cause_key: str) -> str:
    return _name("label", cluster_id, level, cause_key)


def obligation_id(cluster_id: str, cycle: int, kind: str, due_on: date) -> str:
    return _name("obligation", cluster_id, cycle, kind, due_on.isoformat())
