"""A record that makes the handler itself fail is rejected alone; its partition goes on."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from schemas.errors import ErrorClass
from tests.builders import assessed, submitted, typed
from workflows.decider import Decider
from workflows.engine import Inbound, Workflow


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
