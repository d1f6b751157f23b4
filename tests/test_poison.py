"""A record that makes the handler itself fail is rejected alone; its partition goes on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from schemas.errors import ErrorClass
from tests.builders import assessed, submitted, typed
from workflows import ids
from workflows.decider import Decider
from workflows.engine import Inbound, Workflow
from workflows.store import messages


def _inbound(raw: dict[str, Any], offset: int) -> Inbound:
    origin = {"kind": "line", "line": offset, "text": "..."}
    return Inbound(origin, event=typed(raw))


def test_a_record_that_crashes_the_handler_is_rejected_and_the_rest_applied(
    workflow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned_id = "poison-1"
    real_apply = Decider.apply

    def apply(self: Decider, cluster: Any, machine: Any, event: Any) -> Any:
        if event.id == poisoned_id:
            raise ZeroDivisionError("a bug the tests did not foresee")
        return real_apply(self, cluster, machine, event)

    monkeypatch.setattr(Decider, "apply", apply)
    items = [
        _inbound(submitted(date(2025, 5, 1), cluster_id="good-1"), 1),
        _inbound(submitted(date(2025, 5, 1), cluster_id="bad-1", event_id=poisoned_id), 2),
        _inbound(submitted(date(2025, 5, 1), cluster_id="good-2"), 3),
        _inbound(assessed(date(2025, 9, 4), cluster_id="good-1"), 4),
    ]

    result = workflow.apply_batch(items)

    assert [(r.origin["line"], r.error_class) for r in result.rejections] == [
        (2, ErrorClass.INVALID_TRANSITION)
    ]
    assert "ZeroDivisionError" in result.rejections[0].message
    applied = sorted(o.event_id for o in result.outcomes if o.outcome == "applied")
    assert len(applied) == 3
    assert [o["data"]["to"] for o in result.outputs if o["subject"] == "good-1"] == [
        "applied",
        "admitted",
    ]


def test_a_record_whose_effects_violate_a_constraint_is_rejected_and_the_rest_applied(
    workflow: Workflow, db_engine: Engine
) -> None:
    """A unique-constraint failure that no retry resolves is the record's own, not the
    database being unavailable: the batch is split, the record goes to the DLQ alone, the
    21 records behind it apply."""
    colliding = submitted(date(2025, 5, 1), cluster_id="bad-1", event_id="collides-1")
    taken_id = ids.output_id(ids.event_key(colliding["source"], colliding["id"]), 0)
    with db_engine.begin() as conn:  # an output row that already holds the id it would get
        messages.enqueue(
            conn,
            [
                {
                    "event_id": taken_id,
                    "cluster_id": "someone-else",
                    "stream": "membership",
                    "payload": {"id": taken_id},
                    "created_at": datetime(2025, 1, 1, tzinfo=UTC),
                    "sent_at": None,
                }
            ],
        )
    innocent = [
        _inbound(submitted(date(2025, 5, 1), cluster_id=f"good-{n:02d}"), n + 2) for n in range(21)
    ]

    result = workflow.apply_batch([_inbound(colliding, 1), *innocent])

    assert [(r.origin["line"], r.error_class) for r in result.rejections] == [
        (1, ErrorClass.CONFLICT)
    ]
    assert "constraint" in result.rejections[0].message
    assert result.count("applied") == 21
    assert {o["subject"] for o in result.outputs} == {f"good-{n:02d}" for n in range(21)}
