"""The office's views as of a chosen day, on a read-only engine (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from consumers.bootstrap import build_office
from consumers.config import Settings
from office.programme import ProgrammeOffice, WindowError
from schemas.messages import Level
from tests.office_support import IN_BREACH, load_story, office_env
from tests.service_process import run_cli
from workflows.store.database import SchemaOutOfDate
from workflows.store.tables import clusters

STORY_DAY = date(2026, 11, 16)


@pytest.fixture(scope="module")
def story_url(office_story_url: str) -> str:
    return office_story_url


@pytest.fixture(scope="module")
def office(story_url: str) -> Iterator[ProgrammeOffice]:
    built = build_office(Settings(database_url=story_url), today=STORY_DAY)
    yield built
    built.close()


def ids(items: list[object]) -> list[str]:
    return [str(getattr(item, "cluster_id")) for item in items]  # noqa: B009


def test_the_office_engine_refuses_to_write(office: ProgrammeOffice) -> None:
    with pytest.raises(DBAPIError), office.db.begin() as conn:
        conn.execute(update(clusters).values(state="excluded"))
    with office.db.connect() as conn:
        assert "excluded" not in set(conn.scalars(select(clusters.c.state)))


def test_filters_combine_state_label_and_search(office: ProgrammeOffice) -> None:
    assert set(ids(office.clusters(["in_breach"]))) == IN_BREACH
    assert ids(office.clusters(label=Level.GOLD)) == ["kunststoff-sachsen"]
    assert ids(office.clusters(["in_breach"], Level.BRONZE)) == ["wasserstoff-nord"]
    assert ids(office.clusters(search="SACHSEN")) == ["kunststoff-sachsen"]
    assert ids(office.clusters(search="Bayern Innovativ")) == ["cluster-automotive"]
    assert office.clusters(["excluded"]) == []


def test_a_label_past_its_date_reads_expired_before_its_timer_fires(story_url: str) -> None:
    later = build_office(Settings(database_url=story_url), today=date(2026, 12, 10))
    try:
        wasserstoff = later.cluster("wasserstoff-nord")
        assert wasserstoff is not None
        assert [(lb.level, lb.status) for lb in wasserstoff.labels] == [("bronze", "expired")]
        assert wasserstoff.current_label is None
        assert "wasserstoff-nord" not in ids(later.clusters(label=Level.BRONZE))
        overview = later.overview()
        assert [e.cluster_id for e in overview.expiring_labels] == ["kunststoff-sachsen"]
        assert overview.by_label[Level.BRONZE] == 4
    finally:
        later.close()


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # A window containing today: everything overdue, then what falls due in it.
        (None, None, ["luftfahrt-bremen", "wasserstoff-nord", "agrar-digital", "kreislauf-hessen"]),
        ("2026-11-01", "2026-11-30", ["luftfahrt-bremen", "wasserstoff-nord"]),
        # Next month: only what falls due then.
        ("2026-12-01", "2026-12-31", ["agrar-digital"]),
        # A past month: what fell due then and is still unmet.
        ("2026-08-01", "2026-08-31", ["luftfahrt-bremen"]),
        ("2027-09-01", "2027-09-30", ["cluster-automotive"]),
    ],
)
def test_deadline_windows(
    office: ProgrammeOffice, start: str | None, end: str | None, expected: list[str]
) -> None:
    window = office.window(
        date.fromisoformat(start) if start else None, date.fromisoformat(end) if end else None
    )
    assert ids(office.deadlines(window)) == expected


def test_default_window_is_the_90_days_from_today(office: ProgrammeOffice) -> None:
    window = office.window()
    assert (window.start, window.end) == (STORY_DAY, date(2027, 2, 14))
    with pytest.raises(WindowError, match="ends"):
        office.window(date(2026, 12, 2), date(2026, 12, 1))


def test_next_deadline_is_the_earliest_unmet_obligation(office: ProgrammeOffice) -> None:
    by_id = {c.cluster_id: c for c in office.clusters()}
    assert by_id["luftfahrt-bremen"].next_deadline is not None
    assert by_id["luftfahrt-bremen"].next_deadline.obligation == "bronze_interview"
    assert by_id["luftfahrt-bremen"].next_deadline.days_left == -92
    assert by_id["textil-westfalen"].next_deadline is None  # withdrawn: cancelled
    assert by_id["robotik-bw"].next_deadline is None  # rejected: never had obligations


def test_sqlite_readers_never_block_the_writer(sqlite_url: str) -> None:
    load_story(sqlite_url)
    office = build_office(Settings(database_url=sqlite_url), today=STORY_DAY)
    path = make_url(sqlite_url).database
    assert path is not None
    with office.db.connect() as reading:
        before = reading.scalar(
            select(clusters.c.state).where(clusters.c.cluster_id == "robotik-bw")
        )
        # The service's own writer: BEGIN IMMEDIATE, with a short wait instead of 30 s.
        writer = sqlite3.connect(path, timeout=2, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute(
                "UPDATE clusters SET version = version + 1 WHERE cluster_id = 'robotik-bw'"
            )
            writer.execute("COMMIT")
        finally:
            writer.close()
        assert before == "rejected"
    office.close()


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path: pytest.TempPathFactory) -> None:
    missing = tmp_path / "nowhere.db"  # type: ignore[operator]
    with pytest.raises(SchemaOutOfDate, match="no SQLite database at"):
        build_office(Settings(database_url=f"sqlite:///{missing}"))
    done = run_cli(["clusters"], office_env(f"sqlite:///{missing}"), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: no SQLite database at {missing}: `gocluster run` or `replay` creates it"
    ]
    assert not missing.exists()


def test_an_unmigrated_postgres_database_asks_for_db_upgrade(postgres_url: str) -> None:
    done = run_cli(["deadlines"], office_env(postgres_url), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith("run `gocluster db upgrade`")
