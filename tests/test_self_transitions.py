"""The decider's fast path for internal self-transitions against python-statemachine's `send`.

Random stories (tests/test_properties.py's generator) go through two deciders in
memory, one that sends every event and one that takes the fast path where the
chart allows it; after every event and every fired timer, both must have produced
the same step (outputs, notes, history) and the same cluster aggregate.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest
from hypothesis import event, given, settings

from tests.builders import CLUSTER, assessed, scheduled, submitted, typed
from tests.test_properties import PROPERTY, SERVICE, Story, stories
from workflows.actions import Step
from workflows.aggregate import Cluster
from workflows.decider import _MACHINE_EVENT, _TIMER_EVENT, Decider
from workflows.membership import SELF_TRANSITIONS, MembershipMachine
from workflows.policy import load_policy

# cause type of a step -> the chart event it sent
CHART_EVENT = {kind.value: name for kind, name in _MACHINE_EVENT.items()} | {
    f"timer.{kind.value}": name for kind, name in _TIMER_EVENT.items()
}


def snapshot(cluster: Cluster) -> dict[str, Any]:
    return dataclasses.asdict(cluster)


class Twin:
    """The same story through the fast decider and the reference (every event sent)."""

    def __init__(self, story: Story) -> None:
        self.story = story
        self.fast = Decider(story.policy, SERVICE)
        self.reference = Decider(story.policy, SERVICE, fast_self_transitions=False)
        self.fast_clusters: dict[str, Cluster] = {}
        self.reference_clusters: dict[str, Cluster] = {}

    def clusters(self, cluster_id: str) -> tuple[Cluster, Cluster]:
        return (
            self.fast_clusters.setdefault(cluster_id, Cluster(cluster_id)),
            self.reference_clusters.setdefault(cluster_id, Cluster(cluster_id)),
        )

    def compare(
        self, fast: list[Step], reference: list[Step], pair: tuple[Cluster, Cluster]
    ) -> None:
        assert fast == reference
        assert snapshot(pair[0]) == snapshot(pair[1])
        for step in fast:
            for entry in step.history:
                name = CHART_EVENT[step.cause_type]
                fast_path = (entry.from_state or "unknown", name) in SELF_TRANSITIONS
                event(f"{'fast path' if fast_path else 'send'}: {name}")


@settings(PROPERTY, max_examples=120)
@given(story=stories())
def test_the_fast_path_gives_the_outputs_history_and_state_that_send_gives(story: Story) -> None:
    twin = Twin(story)
    for raw in story.events:
        item = typed(raw)
        pair = twin.clusters(item.cluster_id)
        fast_check = twin.fast.check(pair[0], item)
        assert fast_check == twin.reference.check(pair[1], item)
        if fast_check is not None:
            continue  # parked or refused: no send on either side
        machines = (twin.fast.machine(pair[0]), twin.reference.machine(pair[1]))
        at = twin.fast.effective_time(item)
        twin.compare(
            twin.fast.fire_due(pair[0], machines[0], at),
            twin.reference.fire_due(pair[1], machines[1], at),
            pair,
        )
        twin.compare(
            [twin.fast.apply(pair[0], machines[0], item)],
            [twin.reference.apply(pair[1], machines[1], item)],
            pair,
        )
    for cluster_id in list(twin.fast_clusters):
        pair = twin.clusters(cluster_id)
        twin.compare(
            twin.fast.fire_due(pair[0], twin.fast.machine(pair[0]), story.end),
            twin.reference.fire_due(pair[1], twin.reference.machine(pair[1]), story.end),
            pair,
        )


def test_the_table_holds_the_unguarded_internal_self_transitions_and_nothing_else() -> None:
    for state in MembershipMachine.states:
        for transition in state.transitions:
            for name in transition.events:
                first = next(t for t in state.transitions if t.match(name))
                expected = (
                    first.internal
                    and first.target is state
                    and not list(first.cond)
                    and not list(first.validators)
                )
                assert ((state.id, name) in SELF_TRANSITIONS) == expected, (state.id, name)
    # What the chart says today: results while in breach are guarded (a cure leaves the
    # state), a breach while admitted changes state; scheduling while admitted is neither.
    assert ("in_breach", "complete_interview") not in SELF_TRANSITIONS
    assert ("admitted", "breach_deadline") not in SELF_TRANSITIONS
    assert ("admitted", "schedule_interview") in SELF_TRANSITIONS
    assert ("admitted", "complete_interview") in SELF_TRANSITIONS


def test_a_self_transition_does_not_go_through_send_and_a_state_change_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decider = Decider(load_policy(), SERVICE)
    cluster = Cluster(CLUSTER)
    machine = decider.machine(cluster)
    sent: list[str] = []
    original = MembershipMachine.send

    def spy(self: MembershipMachine, name: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(MembershipMachine, "send", spy)
    day = date(2025, 3, 3)
    for raw in (submitted(day), assessed(day), scheduled(day, "iv-1")):
        decider.apply(cluster, machine, typed(raw))
    assert cluster.state == "admitted"
    assert sent == ["submit", "assess"]
