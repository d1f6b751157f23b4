"""Deterministic ids: distinct causes never share an output id (CONTRACT.md section 1),
and every output names its cause by (`cause_source`, `cause_id`)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from schemas.validate import validate_output
from tests.builders import PORTAL, assessed, submitted, typed
from tests.conftest import SERVICE_SOURCE
from workflows import ids
from workflows.engine import Inbound, Workflow

SEPARATOR = "\x1f"
# Text that often contains the old separator, JSON's special characters and quotes.
SPECIAL = st.sampled_from(["\x1f", "a", "/", '"', "\\", "[", "]", ",", "1"])
TEXT = st.text(alphabet=SPECIAL) | st.text()


@settings(max_examples=500, deadline=None)
@given(first=st.tuples(TEXT, TEXT), second=st.tuples(TEXT, TEXT))
@example(first=("/portal\x1fx", "1"), second=("/portal", "x\x1f1"))
@example(first=('["/p"', '"x"]'), second=("/p", "x"))
def test_event_keys_are_injective_whatever_characters_source_and_id_contain(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    if first != second:
        assert ids.event_key(*first) != ids.event_key(*second)
        assert ids.output_id(ids.event_key(*first), 0) != ids.output_id(ids.event_key(*second), 0)


@settings(max_examples=200, deadline=None)
@given(source=TEXT, event_id=TEXT)
def test_an_event_key_never_equals_a_timer_id(source: str, event_id: str) -> None:
    """Timer ids are the other kind of cause key: the two sets never meet."""
    due = datetime(2027, 9, 5, tzinfo=UTC)
    timer = ids.timer_id("cluster-a", "breach", "obligation-1", due, None)
    assert ids.event_key(source, event_id) != timer


@settings(max_examples=200, deadline=None)
@given(
    source=st.text().filter(lambda s: SEPARATOR not in s),
    event_id=st.text().filter(lambda s: SEPARATOR not in s),
)
def test_keys_without_the_separator_keep_their_form_so_deployed_output_ids_do_not_change(
    source: str, event_id: str
) -> None:
    assert ids.event_key(source, event_id) == f"{source}{SEPARATOR}{event_id}"


def test_the_sample_story_keeps_the_output_ids_downstream_has_seen() -> None:
    # The first output of the sample story, as published before cause_source existed.
    key = ids.event_key("/go-cluster/portal", "portal-2025-0412")
    assert ids.output_id(key, 0) == "716b02c0-6a54-5257-a7de-aef9bd151d47"


def line(raw: dict[str, object], number: int) -> Inbound:
    return Inbound({"kind": "line", "line": number, "text": "..."}, event=typed(raw))


def test_outputs_name_the_source_of_their_cause_as_well_as_its_id(
    workflow: Workflow, db_engine: Engine
) -> None:
    """The same event id from two sources: `cause_id` alone cannot tell the causes apart."""
    portal = submitted(date(2025, 5, 12), cluster_id="cluster-a", event_id="app-1")
    other = {
        **submitted(date(2025, 5, 12), cluster_id="cluster-b", event_id="app-1"),
        "source": "/another/portal",
    }
    result = workflow.apply_batch([line(portal, 1), line(other, 2)])

    causes = [(o["data"]["cause_source"], o["data"]["cause_id"]) for o in result.outputs]
    assert causes == [(PORTAL, "app-1"), ("/another/portal", "app-1")]
    for output in result.outputs:
        validate_output(output)


def test_timer_outputs_name_the_service_as_the_source_of_their_cause(
    workflow: Workflow, db_engine: Engine
) -> None:
    workflow.apply_batch(
        [
            line(submitted(date(2025, 5, 12), cluster_id="cluster-a"), 1),
            line(assessed(date(2025, 9, 4), cluster_id="cluster-a"), 2),
        ]
    )
    fired = workflow.fire_due_timers(until=datetime(2026, 3, 10, tzinfo=UTC))

    assert [o["type"] for o in fired.outputs] == [
        "gocluster.deadline.approaching",
        "gocluster.deadline.approaching",
        "gocluster.deadline.breached",
        "gocluster.membership.changed",
    ]
    assert {o["data"]["cause_source"] for o in fired.outputs} == {SERVICE_SOURCE}
    for output in fired.outputs:
        validate_output(output)
