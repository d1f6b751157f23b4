"""Retention: old inbox rows, sent outbox rows, fired and cancelled timers (and history
when configured) are deleted in bounded batches; nothing still needed ever is.

`gocluster prune [--dry-run]` as an operator runs it, and a soak run of
`gocluster run` on Apache Kafka and PostgreSQL whose table sizes stay bounded.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func, select, text

from consumers.config import Settings
from tests import builders, stories
from tests.kafka_fixtures import KafkaTopics
from tests.service_process import (
    ServiceProcess,
    migrate,
    run_cli,
    service_env,
    unsent_count,
    wait_until,
)
from tests.test_kafka_faults import publish
from workflows.store.database import create_db_engine
from workflows.store.retention import Horizons, prune
from workflows.store.tables import history, inbox, outbox, parked, timers

TABLES = ("inbox", "outbox", "timers", "history")


def counts(url: str) -> dict[str, int]:
    """Rows per table, and the rows retention must never touch."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:

            def count(table: Any, *where: Any) -> int:
                query = select(func.count()).select_from(table).where(*where)
                return int(conn.execute(query).scalar_one())

            return {
                "inbox": count(inbox),
                "outbox": count(outbox),
                "timers": count(timers),
                "history": count(history),
                "parked": count(parked),
                "inbox_parked": count(inbox, inbox.c.outcome == "parked"),
                "unsent": count(outbox, outbox.c.sent_at.is_(None)),
                "pending": count(timers, timers.c.status == "pending"),
            }
    finally:
        engine.dispose()


def printed(stdout: str) -> dict[str, int]:
    """table -> rows from `gocluster prune` output lines such as `inbox: 12 rows deleted`."""
    found = re.findall(r"^(\w+): (\d+) rows", stdout, re.MULTILINE)
    return {table: int(n) for table, n in found}


def test_prune_deletes_what_is_past_its_horizon_and_keeps_what_is_still_needed(
    sqlite_url: str, tmp_path: Path
) -> None:
    story = stories.generate(clusters=12, seed=111, prefix="prune")
    env = service_env({"GOCLUSTER_DATABASE_URL": sqlite_url})
    run_cli(["replay", str(stories.write_jsonl(story.events, tmp_path / "story.jsonl"))], env)
    # Timers due by the story's last event fire (later ones stay pending); outputs stay unsent.
    last = max(datetime.fromisoformat(e["time"]) for e in story.events)
    run_cli(["tick", "--now", last.isoformat(), "--no-publish"], env)
    # An interview result for a cluster that never applied: it stays parked.
    early = builders.bronze(date(2025, 3, 1), cluster_id="never-applied")
    run_cli(["replay", str(stories.write_jsonl([early], tmp_path / "early.jsonl"))], env)
    before = counts(sqlite_url)
    assert before["unsent"]
    assert before["inbox_parked"]
    assert 0 < before["pending"] < before["timers"]
    time.sleep(1.5)
    short = {f"GOCLUSTER_RETENTION_{t.upper()}": "PT1S" for t in ("inbox", "outbox", "timers")}

    dry = run_cli(["prune", "--dry-run"], service_env(env, short))
    assert counts(sqlite_url) == before
    done = run_cli(["prune"], service_env(env, short))
    after = counts(sqlite_url)
    again = run_cli(["prune"], service_env(env, short))

    assert after["inbox"] == before["inbox_parked"]
    assert after["outbox"] == before["unsent"]
    assert after["timers"] == before["pending"]
    assert after["history"] == before["history"]  # the audit trail: kept unless configured
    assert after["parked"] == before["parked"]
    deleted = {t: before[t] - after[t] for t in ("inbox", "outbox", "timers")}
    assert printed(dry.stdout) == printed(done.stdout) == deleted
    assert "history: kept" in done.stdout
    assert printed(again.stdout) == dict.fromkeys(deleted, 0)


# -- the store, on SQLite and PostgreSQL -------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
OLD, RECENT, LATER = NOW - timedelta(days=10), NOW - timedelta(hours=1), NOW + timedelta(days=90)


def seed(db: Engine) -> None:
    def inbox_row(event_id: str, at: datetime, outcome: str) -> dict[str, Any]:
        return {
            "source": "/s",
            "event_id": event_id,
            "cluster_id": "c",
            "digest": "d",
            "outcome": outcome,
            "received_at": at,
        }

    def outbox_row(n: int, sent_at: datetime | None) -> dict[str, Any]:
        return {
            "event_id": f"e{n}",
            "cluster_id": "c",
            "stream": "labels",
            "payload": {},
            "created_at": OLD,
            "sent_at": sent_at,
        }

    def timer_row(
        timer_id: str, due_at: datetime, status: str, closed_at: datetime | None = None
    ) -> dict[str, Any]:
        return {
            "timer_id": timer_id,
            "cluster_id": "c",
            "kind": "reminder",
            "due_at": due_at,
            "ref": "r",
            "days_left": None,
            "status": status,
            "closed_at": closed_at,
        }

    def history_row(at: datetime) -> dict[str, Any]:
        return {
            "cluster_id": "c",
            "at": at,
            "cause_id": "x",
            "cause_type": "t",
            "from_state": None,
            "to_state": None,
            "note": "",
            "recorded_at": at,
        }

    with db.begin() as conn:
        conn.execute(
            inbox.insert(),
            [
                inbox_row("old-applied", OLD, "applied"),
                inbox_row("old-rejected", OLD, "rejected"),
                inbox_row("old-parked", OLD, "parked"),
                inbox_row("recent", RECENT, "applied"),
            ],
        )
        conn.execute(
            outbox.insert(),
            [outbox_row(1, OLD), outbox_row(2, None), outbox_row(3, RECENT), outbox_row(4, OLD)],
        )
        conn.execute(
            timers.insert(),
            [
                timer_row("fired-old", OLD, "fired", OLD),
                timer_row("cancelled-old", LATER, "cancelled", OLD),  # due later, closed long ago
                timer_row("pending-old", OLD, "pending"),
                timer_row("cancelled-recent", OLD, "cancelled", RECENT),  # due long ago
                timer_row("fired-recent", RECENT, "fired", RECENT),
            ],
        )
        conn.execute(history.insert(), [history_row(OLD), history_row(OLD), history_row(RECENT)])


def remaining(db: Engine) -> dict[str, set[Any]]:
    with db.connect() as conn:
        return {
            "inbox": set(conn.execute(select(inbox.c.event_id)).scalars()),
            "outbox": set(conn.execute(select(outbox.c.event_id)).scalars()),
            "timers": set(conn.execute(select(timers.c.timer_id)).scalars()),
            "history": set(conn.execute(select(history.c.recorded_at)).scalars()),
        }


DAY = timedelta(days=1)


def test_pruning_deletes_in_batches_only_rows_past_their_horizon_that_nothing_needs(
    db_engine: Engine,
) -> None:
    seed(db_engine)
    horizons = Horizons(inbox=DAY, outbox=DAY, timers=DAY)

    planned = prune(db_engine, horizons, NOW, dry_run=True)
    deleted = prune(db_engine, horizons, NOW, batch=1)

    assert planned == deleted == {"inbox": 2, "outbox": 2, "timers": 2, "history": None}
    assert remaining(db_engine) == {
        "inbox": {"old-parked", "recent"},
        "outbox": {"e2", "e3"},  # unsent, and sent within the horizon
        "timers": {"pending-old", "cancelled-recent", "fired-recent"},
        "history": {OLD, RECENT},  # kept: no horizon set
    }
    assert prune(db_engine, horizons, NOW) == dict.fromkeys(("inbox", "outbox", "timers"), 0) | {
        "history": None
    }


def test_history_is_pruned_only_with_a_horizon_of_its_own(db_engine: Engine) -> None:
    seed(db_engine)

    assert prune(db_engine, Horizons(history=DAY), NOW)["history"] == 2
    assert remaining(db_engine)["history"] == {RECENT}
    assert len(remaining(db_engine)["inbox"]) == 4


def test_retention_settings_read_iso_8601_durations_and_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("GOCLUSTER_")]:
        monkeypatch.delenv(name)
    settings = Settings(
        retention_inbox="P2DT12H", retention_outbox="keep", retention_history="PT90M"
    )
    assert settings.retention() == Horizons(
        inbox=timedelta(days=2, hours=12),
        outbox=None,
        timers=timedelta(days=30),
        history=timedelta(minutes=90),
    )
    assert Settings().retention() == Horizons(
        inbox=timedelta(days=30), outbox=timedelta(days=7), timers=timedelta(days=30)
    )
    with pytest.raises(ValidationError, match="retention_timers"):
        Settings(retention_timers="30 days please")


# -- soak -----------------------------------------------------------------------------------


def table_bytes(url: str) -> dict[str, int]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one())
                for t in TABLES
            }
    finally:
        engine.dispose()


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.slow
def test_a_soak_run_with_short_horizons_keeps_every_table_bounded(
    kafka_topics: KafkaTopics, postgres_url: str, tmp_path: Path
) -> None:
    migrate(postgres_url)
    waves = [stories.generate(clusters=15, seed=200 + n, prefix=f"soak{n}") for n in range(10)]
    horizon_s = 4
    env = service_env(
        kafka_topics.env(),
        {"GOCLUSTER_DATABASE_URL": postgres_url, "GOCLUSTER_RETENTION_INTERVAL_S": "1"},
        {f"GOCLUSTER_RETENTION_{t.upper()}": f"PT{horizon_s}S" for t in TABLES},
    )
    samples: list[dict[str, int]] = []
    published = 0
    with ServiceProcess(env, ("run", "--clock", "wall"), name="soak", log_dir=tmp_path) as soak:
        soak.wait_joined()
        for wave in waves:
            publish(kafka_topics, list(wave.events))
            published += len(wave.events)
            wait_until(lambda n=published: soak.count("event applied") >= n, 60, "the wave applied")
            time.sleep(horizon_s / 2)
            samples.append({"events": published} | counts(postgres_url))
        time.sleep(horizon_s + 4)  # past the horizon and a few pruning rounds
        wait_until(lambda: unsent_count(postgres_url) == 0, 60, "the outbox drained")
        final = counts(postgres_url)
        sizes = table_bytes(postgres_url)
        assert soak.terminate() == 0

    for sample in samples:
        print({k: sample[k] for k in ("events", *TABLES)})
    print("final rows", {t: final[t] for t in TABLES}, "bytes", sizes)
    wave_events = max(len(w.events) for w in waves)
    # Never more than a few waves' rows in the inbox, though ten waves went through.
    assert max(s["inbox"] for s in samples) <= 4 * wave_events, samples
    assert max(s["history"] for s in samples) <= 8 * wave_events, samples
    assert final["inbox"] == final["inbox_parked"]
    assert final["outbox"] == final["unsent"] == 0
    assert final["timers"] == final["pending"]
    assert final["history"] == 0
