"""Deterministic identifiers.

Every id the service mints is a name-based UUID of what caused it, so a replay,
a crash-restart or a rebalance re-derives the same ids and downstream can
deduplicate on them.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime

_NAMESPACE = uuid.UUID("5d1f3c2e-7a0b-4f7e-9a51-2c6b1e0d9f41")
_SEPARATOR = "\x1f"


def _name(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, _SEPARATOR.join(str(p) for p in parts)))


def event_key(source: str, event_id: str) -> str:
    """An input event is identified by (source, id): one key per pair, never shared.

    `source` and `id` joined by the unit separator is the form every deployed
    output id derives from, and it is unambiguous while neither part contains
    the separator. When one does, the key is the JSON array `[source, id]`
    instead: JSON escapes control characters, so that form never contains the
    separator, while the first form always contains it exactly once; the two
    forms never meet, and each is injective on its own.
    """
    if _SEPARATOR in source or _SEPARATOR in event_id:
        return json.dumps([source, event_id])
    return f"{source}{_SEPARATOR}{event_id}"


def output_id(cause_key: str, index: int) -> str:
    return _name("output", cause_key, index)


def timer_id(cluster_id: str, kind: str, ref: str, due_at: datetime, days_left: int | None) -> str:
    return _name("timer", cluster_id, kind, ref, due_at.isoformat(), days_left)


def label_id(cluster_id: str, level: str, cause_key: str) -> str:
    return _name("label", cluster_id, level, cause_key)


def obligation_id(cluster_id: str, cycle: int, kind: str, due_on: date) -> str:
    return _name("obligation", cluster_id, cycle, kind, due_on.isoformat())
