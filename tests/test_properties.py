"""Property-based tests: random event histories of a few clusters through the real handler.

A story is each cluster's life in business-date order (submissions, assessments
that pass or fail, interviews of every kind that pass or fail, cancellations,
withdrawals, re-applications), the clusters interleaved at random, interview
results moved ahead of the events they need (so they park), `tick`s between
batches, and in some tests redeliveries. Every run uses fresh SQLite files.

Interview results are moved earlier only past non-result events of their own
cluster: two results of one cluster never swap. That is what "dates moving
forward" means here; a result delivered after a later result of the same cluster
is a genuinely late fact, and the service cannot un-send a breach it has sent.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from schemas.messages import OutputType
from schemas.validate import validate_output
from tests.builders import (
    Raw,
    assessed,
    benchmarking_result,
    bundled_policy,
    cancelled,
    completed,
    gold_result,
    noon,
    scheduled,
    silver_result,
    submitted,
    typed,
    withdrawn,
)
from workflows.actions import Step
from workflows.aggregate import (
    Cluster,
    LabelStatus,
    MemberState,
    ObligationStatus,
    TimerKind,
    TimerStatus,
)
from workflows.dates import FixedClock
from workflows.decider import Decider
from workflows.engine import Inbound, Workflow
from workflows.policy import Policy, load_policy
from workflows.store import aggregates
from workflows.store.database import create_db_engine, ensure_schema
from workflows.store.tables import clusters, history, timers

POLICY = load_policy()
EXCLUDING = bundled_policy(exclude_after_breach_months=6)
SERVICE = "/gocluster/membership"
CLOCK = datetime(2035, 1, 1, tzinfo=UTC)  # the service clock: only receipt stamps use it
GAPS = (0, 1, 14, 45, 90, 181, 184, 250, 400, 730)
LEVEL_OF_KIND = {"benchmarking": "bronze", "silver_audit": "silver", "gold_assessment": "gold"}
MEETS = {
    "bronze_interview": {"bronze", "silver", "gold"},
    "silver_label": {"silver", "gold"},
    "label_renewal": {"silver", "gold"},
}
EFFECTIVE = Decider(POLICY, SERVICE)  # effective time does not depend on the policy's numbers

PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Tick:
    """`gocluster tick --now until` between two batches."""

    until: datetime


Item = Raw | Tick


@dataclass(frozen=True)
class Story:
    policy: Policy
    schedule: list[Item]  # events in delivery order, with ticks between them
    end: datetime  # the final tick

    @property
    def events(self) -> list[Raw]:
        return [item for item in self.schedule if not isinstance(item, Tick)]


# -- the generator ------------------------------------------------------------------------


def results(kind: str) -> st.SearchStrategy[Raw]:
    """Half the time a clear pass, else anything near the thresholds."""
    return st.one_of(st.just(PASSING[kind]), near_thresholds(kind))


PASSING: dict[str, Raw] = {
    "benchmarking": benchmarking_result(41),
    "silver_audit": silver_result(),
    "gold_assessment": gold_result((9, 6, 10), (8, 6, 10)),
}


def near_thresholds(kind: str) -> st.SearchStrategy[Raw]:
    mostly = st.sampled_from([True, True, True, False])
    if kind == "benchmarking":
        return st.builds(benchmarking_result, st.sampled_from([12, 35, 36, 80]), eligible=mostly)
    if kind == "silver_audit":
        areas = st.one_of(st.tuples(mostly, mostly, mostly), st.tuples(mostly, mostly))
        return st.builds(silver_result, areas, minimum=mostly)
    indicator = st.tuples(st.sampled_from([5, 8, 9, 10]), st.sampled_from([5, 6]), st.just(10))
    return st.lists(indicator, min_size=1, max_size=3).map(lambda ind: gold_result(*ind))


def gap(draw: st.DrawFn) -> timedelta:
    return timedelta(days=draw(st.sampled_from(GAPS)))


def cluster_life(draw: st.DrawFn, cluster_id: str, start: date) -> list[Raw]:
    """One cluster's events in business-date order; ids are unique and deterministic."""
    serial = itertools.count(1)

    def ids(prefix: str) -> str:
        return f"{cluster_id}-{prefix}{next(serial)}"

    events: list[Raw] = []
    cursor = start
    cycles = draw(st.integers(1, 2))
    for cycle in range(cycles):
        existing = None
        if cycle == 0 and draw(st.integers(0, 2)) == 0:
            level = draw(st.sampled_from(["bronze", "silver", "gold"]))
            existing = (level, cursor + timedelta(days=draw(st.integers(-60, 800))))
        events.append(
            submitted(noon(cursor), cluster_id=cluster_id, existing=existing, event_id=ids("a"))
        )
        cursor += gap(draw)
        passed = draw(st.sampled_from([True, True, True, False]))
        events.append(assessed(cursor, passed=passed, cluster_id=cluster_id, event_id=ids("a")))
        for _ in range(draw(st.sampled_from([0, 1, 2, 3, 3, 4])) if passed else 0):
            cursor += gap(draw)
            interview = ids("iv")
            kind = draw(st.sampled_from(list(LEVEL_OF_KIND)))
            if draw(st.booleans()):
                events.append(
                    scheduled(
                        noon(cursor), interview, kind=kind, cluster_id=cluster_id, event_id=ids("i")
                    )
                )
                cursor += timedelta(days=draw(st.integers(0, 30)))
            if draw(st.integers(0, 5)) == 0:
                events.append(
                    cancelled(noon(cursor), interview, cluster_id=cluster_id, event_id=ids("i"))
                )
                continue
            events.append(
                completed(
                    cursor,
                    kind,
                    draw(results(kind)),
                    interview_id=interview,
                    cluster_id=cluster_id,
                    event_id=ids("i"),
                    published=noon(cursor + timedelta(days=draw(st.integers(0, 3)))),
                )
            )
        if cycle < cycles - 1 or draw(st.booleans()):
            cursor += gap(draw)
            # After a rejection this is refused (invalid_transition): noise on purpose.
            events.append(withdrawn(noon(cursor), cluster_id=cluster_id, event_id=ids("a")))
            cursor += gap(draw)
    return events


def is_result(raw: Raw) -> bool:
    return bool(raw["type"] == "gocluster.interview.completed")


def move_results_earlier(draw: st.DrawFn, events: list[Raw]) -> list[Raw]:
    """Results overtake the cluster's other events (they park), never another result."""
    events = list(events)
    floor = 0
    for index in range(len(events)):
        if not is_result(events[index]):
            continue
        target = max(floor, index - draw(st.sampled_from([0, 0, 0, 1, 2, 4])))
        events.insert(target, events.pop(index))
        floor = target + 1
    return events


def effective(raw: Raw) -> datetime:
    return EFFECTIVE.effective_time(typed(raw))


@st.composite
def stories(draw: st.DrawFn) -> Story:
    count = draw(st.integers(1, 3))
    lives = {}
    for n in range(count):
        start = date(2025, 1, 6) + timedelta(days=draw(st.integers(0, 120)))
        life = cluster_life(draw, f"c-{n}", start)
        lives[f"c-{n}"] = move_results_earlier(draw, life)
    order = draw(st.permutations([cid for cid, life in lives.items() for _ in life]))
    cursors = dict.fromkeys(lives, 0)
    merged: list[Raw] = []
    for cid in order:
        merged.append(lives[cid][cursors[cid]])
        cursors[cid] += 1
    # A tick may fire only what no later event could still have prevented.
    ticks = draw(st.sets(st.integers(1, max(1, len(merged) - 1)), max_size=2))
    schedule: list[Item] = []
    for index, raw in enumerate(merged):
        if index in ticks:
            schedule.append(Tick(min(effective(r) for r in merged[index:])))
        schedule.append(raw)
    last = max(effective(r) for r in merged)
    policy = draw(st.sampled_from([POLICY, EXCLUDING]))
    return Story(policy, schedule, last + timedelta(days=5 * 365))


def with_duplicates(draw: st.DrawFn, schedule: list[Item]) -> list[Item]:
    """Redeliver some events (same source, id and content) somewhere after the original."""
    result = list(schedule)
    for _ in range(draw(st.integers(1, 6))):
        positions = [i for i, item in enumerate(result) if not isinstance(item, Tick)]
        original = draw(st.sampled_from(positions))
        at = draw(st.integers(original + 1, len(result)))
        result.insert(at, copy.deepcopy(result[original]))
    return result


# -- running a story through the engine ---------------------------------------------------


@dataclass
class Run:
    outputs: list[dict[str, Any]]
    db: Engine
    outcomes: Counter[str]


Check = Callable[[Engine], None]


def run(
    story: Story,
    schedule: Sequence[Item],
    db_dir: Path,
    batch_size: int,
    check: Check | None = None,
) -> Run:
    db = create_db_engine(f"sqlite:///{db_dir}/gocluster.db")
    ensure_schema(db)
    workflow = Workflow(db, story.policy, FixedClock(CLOCK), SERVICE, mark_sent=True)
    outputs: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    batch: list[Raw] = []

    def flush() -> None:
        if batch:
            items = [
                Inbound({"kind": "line", "line": n}, typed(raw)) for n, raw in enumerate(batch)
            ]
            result = workflow.apply_batch(items)
            outputs.extend(result.outputs)
            outcomes.update(o.outcome for o in result.outcomes)
            batch.clear()
            if check is not None:
                check(db)

    def tick(until: datetime) -> None:
        flush()
        while (result := workflow.fire_due_timers(until)).timers_fired:
            outputs.extend(result.outputs)
        if check is not None:
            check(db)

    for item in schedule:
        if isinstance(item, Tick):
            tick(item.until)
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    tick(story.end)
    return Run(outputs, db, outcomes)


def describe(result: Run) -> None:
    """What the example exercised (pytest --hypothesis-show-statistics)."""
    for outcome in result.outcomes:
        event(f"input {outcome}")
    for out in result.outputs:
        event(f"output {out['type']}")
        if out["type"] == OutputType.MEMBERSHIP_CHANGED:
            event(f"membership {out['data']['from']} -> {out['data']['to']}")
        if out["type"] == OutputType.LABEL_AWARDED and out["data"]["renewal"]:
            event("a renewal")


# -- the properties -----------------------------------------------------------------------


def check_states(db: Engine) -> None:
    """(g) Only chart states; in_breach exactly while an obligation is breached."""
    with db.connect() as conn:
        ids = list(conn.execute(select(clusters.c.cluster_id)).scalars())
        for cluster in aggregates.load(conn, ids).values():
            assert cluster.state != MemberState.UNKNOWN, "a cluster stored before its submission"
            check_aggregate(cluster)


def check_aggregate(cluster: Cluster) -> None:
    state = MemberState(cluster.state)  # raises on anything outside the chart
    assert state is not MemberState.UNKNOWN or not cluster.labels
    active = cluster.active_obligations()
    breached = [o for o in active if o.status is ObligationStatus.BREACHED]
    if state is MemberState.IN_BREACH:
        assert breached, f"{cluster.cluster_id} in breach without a breached obligation"
    else:
        assert not breached, f"{cluster.cluster_id} {state} with a breached obligation"
    if state not in (MemberState.ADMITTED, MemberState.IN_BREACH):
        assert not active, f"{cluster.cluster_id} {state} with open obligations"
    open_ids = {o.obligation_id for o in active if o.status is ObligationStatus.OPEN}
    valid_ids = {lb.label_id for lb in cluster.labels if lb.status is LabelStatus.VALID}
    for timer in cluster.pending_timers():
        if timer.kind in (TimerKind.REMINDER, TimerKind.BREACH):
            assert timer.ref in open_ids, f"pending {timer.kind} of a closed obligation"
        elif timer.kind is TimerKind.LABEL_EXPIRY:
            assert timer.ref in valid_ids, "pending expiry of a label no longer valid"
        else:
            assert state is MemberState.IN_BREACH, f"exclusion pending while {state}"


def check_membership_chain(outputs: Sequence[dict[str, Any]]) -> None:
    """(g) membership.changed events of a cluster chain: each `from` is the previous `to`."""
    last: dict[str, str | None] = defaultdict(lambda: None)
    for out in outputs:
        if out["type"] != OutputType.MEMBERSHIP_CHANGED:
            continue
        data = out["data"]
        assert data["to"] in {s.value for s in MemberState} - {MemberState.UNKNOWN.value}
        assert data["from"] == last[out["subject"]], out
        last[out["subject"]] = data["to"]


def passes(kind: str, result: dict[str, Any]) -> bool:
    """The test's own reading of DOMAIN.md's label table (Silver's prior Bronze aside)."""
    if kind == "benchmarking":
        return bool(result["indicators_benchmarked"] >= 36 and result["eligibility_met"])
    if kind == "silver_audit":
        areas = result["improvement_areas"]
        return (
            len(areas) == 3
            and all(a["validated"] for a in areas)
            and bool(result["minimum_requirements_met"])
        )
    indicators = result["indicators"].values()
    total = sum(Fraction(i["score"]) for i in indicators)
    maximum = sum(Fraction(i["max"]) for i in indicators)
    return all(i["score"] >= i["threshold"] for i in indicators) and total >= maximum * Fraction(
        4, 5
    )


def check_awards_have_passing_interviews(
    events: Sequence[Raw], outputs: Sequence[dict[str, Any]]
) -> None:
    """(a) Every label.awarded cites a passing completed interview of that cluster."""
    results = {(raw["subject"], raw["id"]): raw["data"] for raw in events if is_result(raw)}
    for out in outputs:
        if out["type"] != OutputType.LABEL_AWARDED:
            continue
        data = out["data"]
        cause = results.get((out["subject"], data["cause_id"]))
        assert cause is not None, f"award without a completed interview: {data}"
        assert cause["interview_id"] == data["interview_id"]
        assert LEVEL_OF_KIND[cause["kind"]] == data["level"]
        assert cause["held_on"] == data["awarded_on"]
        assert passes(cause["kind"], cause["result"]), f"award from a failing interview: {cause}"


def check_no_breach_of_an_obligation_met_on_time(outputs: Sequence[dict[str, Any]]) -> None:
    """(b) No award that meets a breached obligation on or before its due date comes later."""
    for index, breach in enumerate(outputs):
        if breach["type"] != OutputType.DEADLINE_BREACHED:
            continue
        cluster, obligation = breach["subject"], breach["data"]["obligation"]
        due = date.fromisoformat(breach["data"]["due_on"])
        for later in outputs[index + 1 :]:
            if later["subject"] != cluster:
                continue
            data = later["data"]
            if later["type"] == OutputType.MEMBERSHIP_CHANGED and data["to"] == "applied":
                break  # a new application cycle: new obligations
            if later["type"] == OutputType.LABEL_AWARDED:
                on_time = date.fromisoformat(data["awarded_on"]) <= due
                assert not (on_time and data["level"] in MEETS[obligation]), (
                    f"{obligation} due {due} breached, then met by {data}"
                )


def check_timers_fire_once(db: Engine, outputs: Sequence[dict[str, Any]]) -> None:
    """(c) A fired timer is the cause of exactly one history step, and nothing else fires."""
    with db.connect() as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                select(history.c.cause_id, func.count())
                .where(history.c.cause_type.startswith("timer."))
                .group_by(history.c.cause_id)
            ).all()
        )
        fired = set(
            conn.execute(
                select(timers.c.timer_id).where(timers.c.status == TimerStatus.FIRED.value)
            ).scalars()
        )
    assert set(counts) == fired
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}
    for out in outputs:
        cause = out["data"]["cause_id"]
        if out["type"] in (
            OutputType.DEADLINE_APPROACHING,
            OutputType.DEADLINE_BREACHED,
            OutputType.LABEL_EXPIRED,
        ):
            assert cause in fired
    assert len({o["id"] for o in outputs}) == len(outputs), "an output id was minted twice"


@settings(PROPERTY, max_examples=30)
@given(story=stories(), batch_size=st.integers(1, 8))
def test_random_histories_award_breach_fire_and_move_only_as_the_rules_allow(
    story: Story, batch_size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    result = run(story, story.schedule, tmp_path_factory.mktemp("db"), batch_size, check_states)
    describe(result)
    try:
        for out in result.outputs:
            validate_output(out)  # (f)
        check_awards_have_passing_interviews(story.events, result.outputs)  # (a)
        check_no_breach_of_an_obligation_met_on_time(result.outputs)  # (b)
        check_timers_fire_once(result.db, result.outputs)  # (c)
        check_membership_chain(result.outputs)  # (g)
    finally:
        result.db.dispose()


@settings(PROPERTY, max_examples=15)
@given(story=stories(), first=st.integers(1, 8), second=st.integers(1, 40))
def test_the_same_input_gives_the_same_outputs_and_ids_on_two_databases_whatever_the_batching(
    story: Story, first: int, second: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    one = run(story, story.schedule, tmp_path_factory.mktemp("db"), first)
    two = run(story, story.schedule, tmp_path_factory.mktemp("db"), second)
    one.db.dispose()
    two.db.dispose()
    assert two.outputs == one.outputs  # (d)


@st.composite
def stories_with_duplicates(draw: st.DrawFn) -> tuple[Story, list[Item]]:
    story = draw(stories())
    return story, with_duplicates(draw, story.schedule)


@settings(PROPERTY, max_examples=15)
@given(case=stories_with_duplicates(), batch_size=st.integers(1, 8))
def test_redelivered_events_change_nothing_in_the_outputs(
    case: tuple[Story, list[Item]], batch_size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    story, redelivered = case
    once = run(story, story.schedule, tmp_path_factory.mktemp("db"), batch_size)
    twice = run(story, redelivered, tmp_path_factory.mktemp("db"), batch_size)
    once.db.dispose()
    twice.db.dispose()
    assert twice.outputs == once.outputs  # (e)


# -- the statechart alone, checked after every single step --------------------------------


@settings(PROPERTY, max_examples=80)
@given(story=stories())
def test_the_statechart_never_reaches_an_impossible_state_after_any_step(story: Story) -> None:
    """(g) in memory: after every event and every fired timer, not only per batch."""
    decider = Decider(story.policy, SERVICE)
    by_cluster: dict[str, Cluster] = {}
    steps: list[Step] = []
    for raw in story.events:
        event = typed(raw)
        cluster = by_cluster.setdefault(event.cluster_id, Cluster(event.cluster_id))
        machine = decider.machine(cluster)
        if decider.check(cluster, event) is not None:
            continue  # parked or refused: the engine's business, not the chart's
        for timer_step in decider.fire_due(cluster, machine, decider.effective_time(event)):
            steps.append(timer_step)
            check_aggregate(cluster)
        steps.append(decider.apply(cluster, machine, event))
        check_aggregate(cluster)
    for cluster in by_cluster.values():
        machine = decider.machine(cluster)
        while (due := cluster.pending_timers()) and due[0].due_at <= story.end:
            steps.extend(decider.fire_due(cluster, machine, due[0].due_at))
            check_aggregate(cluster)
    awarded = [o for s in steps for o in s.outputs if o.type is OutputType.LABEL_AWARDED]
    results = {raw["id"]: raw["data"] for raw in story.events if is_result(raw)}
    for award in awarded:
        data = results[award.data["cause_id"]]
        assert passes(data["kind"], data["result"])
