"""The reliability campaign's fast subset (the full one: `python -m reliability`, report in
docs/RELIABILITY.md; the fault phases' subset is tests/test_reliability_faults.py).

600 events over 60 clusters, with upstream re-deliveries and bad records, go
through real `gocluster` processes while the service is SIGKILLed twice, the
separate outbox relay once and a `tick` once while it fires timers;
PostgreSQL (a private server, so that stopping it disturbs nothing else) is
down when they start and restarted mid-stream. The database and the output
topics must then equal an uninterrupted `gocluster replay` of the same
records: nothing lost, nothing done twice. The last test checks that the
comparison itself can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from reliability.campaign import run_campaign
from reliability.config import Config, split_kills
from reliability.private_postgres import postgres_bindir
from reliability.report import render
from reliability.snapshot import compare, snapshot
from tests import stories
from tests.dbutil import in_ci
from tests.service_process import replay
from workflows.store.database import create_db_engine
from workflows.store.tables import history

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _needs(what: str, present: bool) -> None:
    if present:
        return
    message = f"{what} missing: the reliability campaign needs it"
    if in_ci():
        pytest.fail(f"CI is set, so this is an error, not a skip: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _needs("the PostgreSQL server binaries (initdb, pg_ctl)", postgres_bindir() is not None)
    config = Config(
        events=600,
        clusters=60,
        kills=4,
        seed=11,
        pg_restarts=1,
        phases=("crash",),
        out=None,
        report=None,
        bad_input=None,
        command="python -m reliability --events 600 --clusters 60 --kills 4 "
        "--seed 11 --pg-restarts 1 --phases crash",
    )
    config.kill_split = split_kills(config.kills)
    return run_campaign(config, tmp_path_factory.mktemp("campaign"))


def test_kills_and_postgres_restarts_lose_nothing_and_do_nothing_twice(
    campaign: dict[str, Any],
) -> None:
    crash = campaign["phases"]["crash"]
    assert "error" not in crash, crash.get("error")
    details = {k: crash[k] for k in ("database", "outputs", "dlq", "invariants")}
    assert (crash["lost"], crash["duplicated"]) == (0, 0), details
    assert (crash["mismatched"], crash["unexpected"]) == (0, 0), details
    assert crash["outputs"]["published_ids"] == crash["reference"]["items"]["outbox"]
    assert crash["dlq"]["in_dlq"] == crash["stream"]["bad_records"] == 20
    assert crash["invariants"]["chain_breaks"] == 0
    assert crash["unsent_at_end"] == 0
    assert campaign["totals"]["passed"], campaign["totals"]["problems"]


def test_the_kills_landed_in_the_consumer_the_relay_and_the_tick(campaign: dict[str, Any]) -> None:
    crash = campaign["phases"]["crash"]
    assert crash["kills"] == {"consumer": 2, "relay": 1, "tick": 1}, campaign["faults"]
    kills = [f for f in campaign["faults"] if f["kind"] == "SIGKILL"]
    assert all(f.get("ready") or f.get("relay_process") for f in kills)
    # Restarted after every kill, never crashed by itself, and stopped cleanly at the end.
    assert crash["crashes"] == []
    assert crash["exit_codes"]
    assert set(crash["exit_codes"].values()) == {0}


def test_postgres_down_at_start_and_restarted_mid_stream_is_survived_and_logged(
    campaign: dict[str, Any],
) -> None:
    faults = {f["kind"]: f for f in campaign["faults"]}
    start = faults["database unreachable at start"]
    assert start["processes_alive"]
    assert all(
        lines.get("database unreachable at start, retrying", 0) >= 2
        for lines in start["log_lines"].values()
    )
    assert "***" in start["example"]["database"] or "@" in start["example"]["database"]
    restart = faults["PostgreSQL restart"]
    assert restart["processes_survived"], restart
    assert restart["resumed_after_s"] is not None, "input was not applied again afterwards"
    said = {event for lines in restart["log_lines"].values() for event in lines}
    assert said & {
        "database unavailable, batch will be retried",
        "database unavailable for timers",
        "database unavailable for the outbox",
        "outbox relay lost its database session",
    }, restart


def test_the_report_states_the_figures_and_how_to_reproduce_them(campaign: dict[str, Any]) -> None:
    text = render(campaign, None)
    assert "| verdict | **PASSED** |" in text
    assert "| **lost** effects | **0** |" in text
    assert "| **duplicated** effects | **0** |" in text
    assert campaign["command"] in text
    assert "python -m reliability.bad_input" in text  # the placeholder says how to fill it


def test_the_comparison_finds_a_lost_and_a_duplicated_effect(tmp_path: Path) -> None:
    """The checker can fail: a history row removed and another applied twice are seen."""
    story = stories.generate(clusters=4, seed=3, prefix="cmp")
    _, url = replay(list(story.events), tmp_path / "replay", now="2035-01-01T00:00:00Z")
    reference = snapshot(url)
    engine = create_db_engine(url)
    with engine.begin() as conn:
        first, second = conn.execute(select(history.c.id).order_by(history.c.id).limit(2)).scalars()
        conn.execute(delete(history).where(history.c.id == first))
        copied = [c for c in history.columns if c.name != "id"]
        again = select(*copied).where(history.c.id == second)
        conn.execute(insert(history).from_select([c.name for c in copied], again))
    engine.dispose()
    found = compare(reference, snapshot(url)).to_json()
    assert found["per_kind"]["history"] == {
        "lost": 1,
        "unexpected": 0,
        "duplicated": 1,
        "mismatched": 0,
    }
    assert (found["lost"], found["duplicated"]) == (1, 1)
