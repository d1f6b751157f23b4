"""The fault phases' fast subset (the full ones: `python -m reliability --phases
pause,readonly,adversarial,clock,parked,soak`, report in docs/RELIABILITY.md).

Each phase runs small against a private PostgreSQL server and Apache Kafka and must
pass its bounds: the other member applies within the bound when one is stopped
(idle, or inside its transaction), another relay publishes when the leader is
stopped, a read-only database costs at most one relay batch of identical copies,
adversarial ids stick no partition and share no output id, a producer clock years
ahead or a late result fires no early or false breach, parked events are released
within the bound without a rebalance, table sizes stay flat under retention.

The checks themselves are tested first, on made-up figures, both ways: a bound
that cannot fail (or cannot pass) would prove nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from reliability.campaign import campaign_context, run_phase
from reliability.clock import judge
from reliability.config import Config
from reliability.context import Context
from reliability.private_postgres import postgres_bindir
from reliability.report import render
from reliability.soak import growth_checks
from tests.dbutil import in_ci
from workflows.dates import passes_at
from workflows.policy import load_policy

FAST = Config(
    seed=13,
    phases=(),
    pause_events=300,
    pause_bound_s=20.0,
    readonly_events=600,
    readonly_seconds=8.0,
    readonly_episodes=1,
    adversarial_followers=150,
    adversarial_bound_s=40.0,
    clock_clusters=4,
    parked_events=15_000,
    parked_bound_s=45.0,
    soak_seconds=60.0,
    soak_rate=40.0,
    soak_horizon_s=8,
    soak_sample_s=3.0,
    soak_prune_every_s=4.0,
    out=None,
    report=None,
    bad_input=None,
)


def _failed(phase: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    assert "error" not in phase, phase["error"]
    return [c for c in phase["checks"] if c["check"].startswith(prefix) and not c["passed"]]


# -- the checks on made-up figures -------------------------------------------------------


def _samples(sizes: list[int]) -> list[dict[str, Any]]:
    tables = ("inbox", "outbox", "timers closed", "history")
    return [{"t": 10.0 * i, "rows": dict.fromkeys(tables, n)} for i, n in enumerate(sizes)]


def test_table_growth_within_the_bound_passes_and_growth_with_the_input_fails() -> None:
    sawtooth, _ = growth_checks(_samples([0, 400, 800, 520, 830, 510, 815]), 0.0, 60.0, 0.25)
    assert all(c["passed"] for c in sawtooth), sawtooth
    linear, growth = growth_checks(_samples([0, 400, 800, 1200, 1600, 2000, 2400]), 0.0, 60.0, 0.25)
    assert not any(c["passed"] for c in linear)
    assert growth["inbox rows"] == {"middle": 1600, "last": 2400, "growth": 0.5}


def _breach(
    cluster: str, due: date, decided: datetime, obligation: str = "bronze_interview"
) -> Any:
    zone = load_policy().zone
    payload = {
        "type": "gocluster.deadline.breached",
        "subject": cluster,
        "time": passes_at(due, zone).isoformat(),
        "data": {"due_on": due.isoformat(), "obligation": "bronze_interview"},
    }
    return {"cluster_id": cluster, "stream": "deadlines", "payload": payload, "created_at": decided}


def test_the_clock_rules_flag_an_early_breach_a_future_output_and_a_false_breach() -> None:
    zone = load_policy().zone
    due = date(2026, 5, 4)
    after = passes_at(due, zone) + timedelta(hours=1)
    clean, _ = judge([_breach("a", due, after)], {}, zone, FAST)
    assert all(c["passed"] for c in clean), clean
    early = passes_at(due, zone) - timedelta(days=400)
    met = {("b", "bronze_interview"): due}
    checks, figures = judge([_breach("a", due, early), _breach("b", due, after)], met, zone, FAST)
    assert [c["passed"] for c in checks] == [False, False, False]
    assert figures["earliest_breach_days_before_due"] == 400.0
    assert figures["false_breaches"] == ["b bronze_interview due 2026-05-04"]


def test_the_report_shows_each_fault_phase_before_and_after_the_fixes() -> None:
    check = {"check": "x", "value": 3, "bound": "≤ 0", "passed": False, "said": "3 copies"}
    phase = {"checks": [check], "figures": {}, "passed": False, "summary": "readonly: 3: FAIL"}
    now = {"checks": [check | {"passed": True, "value": 0}], "passed": True}
    result = {
        "started": "2026-12-01T00:00:00+00:00",
        "phases": {"readonly": now | {"summary": "readonly: 0: PASS", "figures": {}}},
        "before_fixes": {
            "label": "before the fixes (h8-campaign)",
            "phases": {"readonly": phase | {"recorded": "2026-11-30T00:00:00+00:00"}},
        },
    }
    text = render(result)
    assert "| readonly | **PASS** | readonly: 0: PASS | readonly: 3: FAIL |" in text
    assert "Before the fixes (recorded 2026-11-30T00:00:00+00:00):" in text


# -- the phases -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    if postgres_bindir() is None:
        message = "the PostgreSQL server binaries (initdb, pg_ctl) are missing"
        if in_ci():
            pytest.fail(f"CI is set, so this is an error, not a skip: {message}")
        pytest.skip(message)
    with campaign_context(FAST, tmp_path_factory.mktemp("faults")) as (ctx, _):
        yield ctx


@pytest.fixture(scope="module")
def pause(context: Context) -> dict[str, Any]:
    return run_phase("pause", context)


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_member_stopped_past_its_session_timeout_is_replaced_within_the_bound(
    pause: dict[str, Any],
) -> None:
    assert not _failed(pause, "idle member"), pause["cases"]["idle member"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_member_stopped_inside_its_transaction_does_not_stall_the_group(
    pause: dict[str, Any],
) -> None:
    assert not _failed(pause, "member in its transaction"), pause["summary"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_stopped_relay_leader_is_replaced_within_the_bound(pause: dict[str, Any]) -> None:
    assert not _failed(pause, "relay leader"), pause["summary"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_read_only_database_costs_at_most_one_relay_batch_of_copies(context: Context) -> None:
    phase = run_phase("readonly", context)
    assert not _failed(phase), phase["summary"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_adversarial_ids_stick_no_partition_and_share_no_output_id(context: Context) -> None:
    phase = run_phase("adversarial", context)
    assert not _failed(phase), phase["summary"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_producer_clock_years_ahead_and_late_results_fire_no_early_or_false_breach(
    context: Context,
) -> None:
    phase = run_phase("clock", context)
    assert not _failed(phase), phase["summary"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_parked_events_of_one_cluster_are_released_within_the_bound_without_a_rebalance(
    context: Context,
) -> None:
    phase = run_phase("parked", context)
    assert not _failed(phase), phase["summary"]


@pytest.mark.kafka
@pytest.mark.postgres
def test_table_sizes_stay_bounded_under_short_retention_horizons(context: Context) -> None:
    phase = run_phase("soak", context)
    assert not _failed(phase), phase["summary"]
