"""Two deliveries of one (source, id) are the same event when type, subject, data and the
*instant* of `time` agree (CONTRACT.md section 4), also for events received before the
inbox compared instants."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from schemas.errors import ErrorClass
from tests.builders import submitted, typed
from workflows.engine import Inbound, Workflow
from workflows.store import messages


def line(raw: dict[str, Any], number: int = 1) -> Inbound:
    return Inbound({"kind": "line", "line": number, "text": "..."}, event=typed(raw))


def at(time: str) -> dict[str, Any]:
    return {**submitted(date(2025, 5, 12), cluster_id="cluster-a", event_id="sub-1"), "time": time}


def test_a_redelivery_with_time_rewritten_to_another_offset_is_a_duplicate(
    workflow: Workflow,
) -> None:
    """The official SDK re-renders `time`: ...T14:10:00Z becomes ...T16:10:00.000+02:00."""
    first = workflow.apply_batch([line(at("2025-05-12T14:10:00Z"))])
    again = workflow.apply_batch([line(at("2025-05-12T16:10:00.000+02:00"))])
    same_batch = workflow.apply_batch(
        [line(at("2025-05-12t14:10:00.000000z")), line(at("2025-05-12T14:10:00+00:00"))]
    )

    assert [o.outcome for o in first.outcomes] == ["applied"]
    assert [o.outcome for o in again.outcomes] == ["duplicate"]
    assert [o.outcome for o in same_batch.outcomes] == ["duplicate", "duplicate"]
    assert again.rejections == same_batch.rejections == []


def test_another_instant_under_the_same_source_and_id_is_a_conflict(workflow: Workflow) -> None:
    workflow.apply_batch([line(at("2025-05-12T14:10:00Z"))])
    other = workflow.apply_batch([line(at("2025-05-12T14:10:00.001Z"))])

    assert [r.error_class for r in other.rejections] == [ErrorClass.CONFLICT]


def digest_before_the_upgrade(raw: dict[str, Any]) -> str:
    """What the inbox stored before it compared instants: `time` as the text it came as."""
    content = {k: raw.get(k) for k in ("type", "subject", "time", "data")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def test_an_unchanged_redelivery_of_an_event_received_before_the_upgrade_is_a_duplicate(
    workflow: Workflow, db_engine: Engine
) -> None:
    original = at("2025-05-12T16:10:00+02:00")
    with db_engine.begin() as conn:
        messages.record_received(
            conn,
            [
                {
                    "source": original["source"],
                    "event_id": original["id"],
                    "cluster_id": "cluster-a",
                    "digest": digest_before_the_upgrade(original),
                    "outcome": "applied",
                    "received_at": datetime(2025, 5, 12, tzinfo=UTC),
                }
            ],
        )

    again = workflow.apply_batch([line(original)])

    assert [o.outcome for o in again.outcomes] == ["duplicate"]
