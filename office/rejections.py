"""Rejected input records (the DLQ rows of the outbox) as the office shows them.

A rejected record may be anything (it was rejected), so reading its event id,
type and subject is best effort: binary mode carries them in `ce_*` headers,
structured mode in the JSON value; what cannot be read is left out.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from office.models import RejectionView
from workflows.store import views


def latest(conn: Connection, limit: int, zone: ZoneInfo) -> list[RejectionView]:
    found = []
    for row in views.dlq_rows(conn, limit):
        payload = row["payload"]
        origin = payload.get("origin") or {}
        attributes = _event_attributes(origin)
        found.append(
            RejectionView(
                seq=row["seq"],
                error_class=str(payload.get("error_class", "")),
                error_message=str(payload.get("error_message", "")),
                event_id=_text(attributes.get("id")),
                event_type=_text(attributes.get("type")),
                cluster_id=row["cluster_id"] or _text(attributes.get("subject")),
                topic=_text(origin.get("topic")),
                partition=_int(origin.get("partition")),
                offset=_int(origin.get("offset")),
                at=row["created_at"].astimezone(zone),
                published=row["sent_at"] is not None,
            )
        )
    return found


def _event_attributes(origin: dict[str, Any]) -> dict[str, Any]:
    """CloudEvents attributes of a rejected Kafka record, as far as they can be read."""
    found: dict[str, Any] = {}
    for pair in origin.get("headers") or ():
        if isinstance(pair, list | tuple) and len(pair) == 2 and str(pair[0]).startswith("ce_"):
            found.setdefault(str(pair[0])[3:], _unb64_text(pair[1]))
    if found:
        return found
    value = _unb64_text(origin.get("value"))
    try:
        event = json.loads(value) if value else None
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _unb64_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
