"""The storage contract suite: the same tests on SQLite and on PostgreSQL (via `db_url`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, select, update
from sqlalchemy.exc import IntegrityError

from schemas.messages import Level
from tests.dbutil import wait_for_lock_waiter
from workflows.aggregate import (
    Cluster,
    Label,
    LabelStatus,
    Obligation,
    ObligationKind,
    ObligationStatus,
    Timer,
    TimerKind,
    TimerStatus,
)
from workflows.store import aggregates, messages
from workflows.store.aggregates import StaleAggregate
from workflows.store.database import (
    SchemaOutOfDate,
    create_db_engine,
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)
from workflows.store.messages import ParkedEvent
from workflows.store.queries import cluster_view
from workflows.store.tables import (
    clusters,
    history,
    inbox,
    labels,
    metadata,
    obligations,
    outbox,
    timers,
)

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def bare_engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database: no migration run yet."""
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


# -- migrations ------------------------------------------------------------------------------


def test_upgrade_brings_an_empty_database_to_head_and_is_idempotent(bare_engine: Engine) -> None:
    assert table_names(bare_engine) == set()
    assert current_revision(bare_engine) is None

    upgrade(bare_engine)
    head = head_revision(bare_engine)
    assert head is not None
    assert current_revision(bare_engine) == head
    assert table_names(bare_engine) == set(metadata.tables) | {"alembic_version"}

    upgrade(bare_engine)  # a second run (every deploy runs it) changes nothing
    assert current_revision(bare_engine) == head
    assert table_names(bare_engine) == set(metadata.tables) | {"alembic_version"}


def test_migrated_schema_matches_the_table_definitions(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_ensure_schema_on_sqlite_upgrades_by_itself(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    try:
        ensure_schema(engine)
        assert current_revision(engine) == head_revision(engine)
        ensure_schema(engine)  # already current: nothing to do, no error
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_ensure_schema_on_postgres_refuses_and_names_the_upgrade_command(
    postgres_url: str,
) -> None:
    engine = create_db_engine(postgres_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="gocluster db upgrade"):
            ensure_schema(engine)
        assert table_names(engine) == set(), "ensure_schema must not migrate a shared database"
        upgrade(engine)
        ensure_schema(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgres_urls_connect_with_psycopg3(postgres_url: str, scheme: str) -> None:
    engine = create_db_engine(postgres_url.replace("postgresql+psycopg", scheme))
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(select(1)).scalar_one() == 1
    finally:
        engine.dispose()


# -- aggregates ------------------------------------------------------------------------------


def make_cluster(cluster_id: str = "cluster-a") -> Cluster:
    """A new (not yet persisted) aggregate with one of each child, in a non-UTC zone."""
    cluster = Cluster(
        cluster_id,
        state="admitted",
        cycle=1,
        cluster_name="Cluster A",
        organisation="Org A",
        federal_state="DE-BY",
        admitted_on=date(2025, 9, 4),
    )
    cluster.labels.append(
        Label(
            f"{cluster_id}-label",
            cluster_id,
            Level.BRONZE,
            date(2025, 11, 20),
            date(2027, 11, 20),
            "ecei-bm-1",
            False,
            LabelStatus.VALID,
            "bm-1",
        )
    )
    cluster.obligations.append(
        Obligation(
            f"{cluster_id}-silver",
            cluster_id,
            ObligationKind.SILVER_LABEL,
            1,
            date(2027, 9, 4),
            ObligationStatus.OPEN,
            "portal-2",
        )
    )
    cluster.timers.append(
        Timer(
            f"{cluster_id}-breach",
            cluster_id,
            TimerKind.BREACH,
            datetime(2027, 9, 5, tzinfo=BERLIN),  # 2027-09-04T22:00Z
            f"{cluster_id}-silver",
        )
    )
    cluster.timers.append(
        Timer(
            f"{cluster_id}-remind-30",
            cluster_id,
            TimerKind.REMINDER,
            datetime(2027, 8, 5, tzinfo=BERLIN),
            f"{cluster_id}-silver",
            days_left=30,
        )
    )
    return cluster


def save(engine: Engine, *aggregate: Cluster) -> None:
    with engine.begin() as conn:
        aggregates.save(conn, list(aggregate), NOW)


def load_one(engine: Engine, cluster_id: str) -> Cluster:
    with engine.begin() as conn:
        return aggregates.load(conn, [cluster_id])[cluster_id]


def test_aggregate_round_trip_keeps_children_dates_and_aware_datetimes(db_engine: Engine) -> None:
    original = make_cluster()
    save(db_engine, original)
    loaded = load_one(db_engine, "cluster-a")

    assert (loaded.state, loaded.cycle, loaded.version) == ("admitted", 1, 1)
    assert (loaded.cluster_name, loaded.organisation, loaded.federal_state) == (
        "Cluster A",
        "Org A",
        "DE-BY",
    )
    assert loaded.admitted_on == date(2025, 9, 4)
    assert loaded.persisted
    assert not loaded.changed

    (label,) = loaded.labels
    assert (label.level, label.awarded_on, label.valid_until) == (
        Level.BRONZE,
        date(2025, 11, 20),
        date(2027, 11, 20),
    )
    assert (label.interview_id, label.renewal, label.status, label.cause_id) == (
        "ecei-bm-1",
        False,
        LabelStatus.VALID,
        "bm-1",
    )
    (obligation,) = loaded.obligations
    assert (obligation.kind, obligation.cycle, obligation.due_on, obligation.status) == (
        ObligationKind.SILVER_LABEL,
        1,
        date(2027, 9, 4),
        ObligationStatus.OPEN,
    )
    assert obligation.closed_by is None

    by_id = {t.timer_id: t for t in loaded.timers}
    assert set(by_id) == {"cluster-a-breach", "cluster-a-remind-30"}
    breach = by_id["cluster-a-breach"]
    assert breach.due_at == datetime(2027, 9, 4, 22, 0, tzinfo=UTC)  # same instant as Berlin 00:00
    assert breach.due_at.utcoffset() == timedelta(0), "datetimes come back aware, in UTC"
    assert (breach.kind, breach.ref, breach.days_left) == (
        TimerKind.BREACH,
        "cluster-a-silver",
        None,
    )
    assert by_id["cluster-a-remind-30"].days_left == 30
    assert all(child.persisted and not child.changed for child in loaded.timers)


def test_load_returns_only_active_obligations_and_pending_timers(db_engine: Engine) -> None:
    cluster = make_cluster()
    cluster.obligations[0].status = ObligationStatus.MET
    cluster.timers[0].status = TimerStatus.FIRED
    cluster.timers[1].status = TimerStatus.CANCELLED
    save(db_engine, cluster)

    loaded = load_one(db_engine, "cluster-a")
    assert loaded.obligations == []
    assert loaded.timers == []
    assert len(loaded.labels) == 1, "labels are the cluster's whole label history"


def test_load_of_unknown_clusters_returns_nothing(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        assert aggregates.load(conn, ["nobody"]) == {}
        assert aggregates.load(conn, []) == {}


def test_save_writes_only_new_and_changed_rows_and_bumps_the_version(db_engine: Engine) -> None:
    save(db_engine, make_cluster())
    written: set[tuple[str, str]] = set()

    def capture(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.split()
        if words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            table = words[1] if words[0].upper() == "UPDATE" else words[2]
            written.add((words[0].lower(), table.strip('"')))

    with db_engine.begin() as conn:
        cluster = aggregates.load(conn, ["cluster-a"])["cluster-a"]
        # Rows the save must leave alone: changed behind the aggregate's back after loading.
        # Rewriting them would put the loaded values back.
        conn.execute(update(labels).values(status="tampered"))
        conn.execute(update(obligations).values(status="tampered"))
        conn.execute(
            update(timers).where(timers.c.timer_id == "cluster-a-breach").values(status="tampered")
        )
        reminder = next(t for t in cluster.timers if t.kind is TimerKind.REMINDER)
        reminder.status = TimerStatus.FIRED
        reminder.touch()
        cluster.timers.append(
            Timer("cluster-a-new", "cluster-a", TimerKind.REMINDER, NOW, "x", days_left=90)
        )
        cluster.state = "in_breach"
        cluster.changed = True
        event.listen(db_engine, "before_cursor_execute", capture)
        try:
            aggregates.save(conn, [cluster], NOW)
        finally:
            event.remove(db_engine, "before_cursor_execute", capture)
        assert cluster.version == 2
        assert not cluster.changed
        assert sorted(t.timer_id for t in cluster.timers) == ["cluster-a-breach", "cluster-a-new"]

    assert written == {("update", "clusters"), ("update", "timers"), ("insert", "timers")}
    with db_engine.begin() as conn:
        row = conn.execute(select(clusters)).mappings().one()
        assert (row["state"], row["version"]) == ("in_breach", 2)
        assert conn.execute(select(labels.c.status)).scalar_one() == "tampered"
        assert conn.execute(select(obligations.c.status)).scalar_one() == "tampered"
        statuses = dict(conn.execute(select(timers.c.timer_id, timers.c.status)).all())
    assert statuses == {
        "cluster-a-breach": "tampered",
        "cluster-a-remind-30": "fired",
        "cluster-a-new": "pending",
    }


def test_save_of_an_unchanged_aggregate_writes_nothing(db_engine: Engine) -> None:
    save(db_engine, make_cluster())
    with db_engine.begin() as conn:
        cluster = aggregates.load(conn, ["cluster-a"])["cluster-a"]
        aggregates.save(conn, [cluster], NOW + timedelta(days=1))
    with db_engine.begin() as conn:
        row = conn.execute(select(clusters.c.version, clusters.c.updated_at)).one()
    assert row == (1, NOW)


def test_saving_over_another_writers_change_raises_stale_aggregate(db_engine: Engine) -> None:
    save(db_engine, make_cluster("cluster-a"), make_cluster("cluster-b"))
    mine = load_one(db_engine, "cluster-a")
    other = load_one(db_engine, "cluster-b")

    theirs = load_one(db_engine, "cluster-a")  # another instance's copy
    theirs.state = "in_breach"
    theirs.changed = True
    save(db_engine, theirs)

    mine.state = "withdrawn"
    mine.changed = True
    other.state = "withdrawn"
    other.changed = True
    with pytest.raises(StaleAggregate):
        save(db_engine, other, mine)

    with db_engine.begin() as conn:
        states = dict(conn.execute(select(clusters.c.cluster_id, clusters.c.state)).all())
    assert states == {"cluster-a": "in_breach", "cluster-b": "admitted"}, "rolled back whole"


def test_inserting_an_existing_cluster_again_fails(db_engine: Engine) -> None:
    save(db_engine, make_cluster())
    with pytest.raises(IntegrityError):
        save(db_engine, make_cluster())  # two instances both saw "new cluster"


@pytest.mark.postgres
def test_load_locks_clusters_and_skip_locked_passes_over_them(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    try:
        upgrade(engine)
        save(engine, make_cluster("cluster-a"), make_cluster("cluster-b"))
        with engine.begin() as holder:
            assert set(aggregates.load(holder, ["cluster-a"])) == {"cluster-a"}
            with engine.begin() as timer_loop:
                got = aggregates.load(timer_loop, ["cluster-a", "cluster-b"], skip_locked=True)
                assert set(got) == {"cluster-b"}

            blocked = threading.Event()
            done = threading.Event()

            def writer() -> None:
                with engine.begin() as conn:
                    blocked.set()
                    aggregates.load(conn, ["cluster-a"])  # waits for `holder`
                    done.set()

            thread = threading.Thread(target=writer)
            thread.start()
            assert blocked.wait(5)
            assert wait_for_lock_waiter(engine, done=done.is_set), "FOR UPDATE waits"
            assert not done.is_set()
        thread.join(5)
        assert done.is_set()
    finally:
        engine.dispose()


def test_due_clusters_lists_pending_timers_due_by_a_time_earliest_first(
    db_engine: Engine,
) -> None:
    early, late, fired = make_cluster("early"), make_cluster("late"), make_cluster("fired")
    early.timers[1].due_at = datetime(2026, 3, 1, tzinfo=UTC)
    late.timers[1].due_at = datetime(2026, 6, 1, tzinfo=UTC)
    fired.timers[1].due_at = datetime(2026, 1, 1, tzinfo=UTC)
    fired.timers[1].status = TimerStatus.FIRED
    save(db_engine, late, fired, early)

    with db_engine.begin() as conn:
        assert aggregates.due_clusters(conn, datetime(2026, 12, 31, tzinfo=UTC), 10) == [
            "early",
            "late",
        ]
        assert aggregates.due_clusters(conn, datetime(2026, 12, 31, tzinfo=UTC), 1) == ["early"]
        # the bound is inclusive and compares instants, whatever the zone of the argument
        bound = datetime(2026, 3, 1, 1, 0, tzinfo=BERLIN)
        assert aggregates.due_clusters(conn, bound, 10) == ["early"]
        assert aggregates.due_clusters(conn, bound - timedelta(seconds=1), 10) == []


# -- inbox -----------------------------------------------------------------------------------


def inbox_row(event_id: str, outcome: str = "applied", digest: str = "d1") -> dict[str, Any]:
    return {
        "source": "/go-cluster/portal",
        "event_id": event_id,
        "cluster_id": "cluster-a",
        "digest": digest,
        "outcome": outcome,
        "received_at": NOW,
    }


def test_inbox_finds_received_events_and_refuses_a_second_insert(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        messages.record_received(conn, [inbox_row("e1"), inbox_row("e2", digest="d2")])
    with db_engine.begin() as conn:
        found = messages.seen(
            conn,
            [
                ("/go-cluster/portal", "e1"),
                ("/go-cluster/portal", "e2"),
                ("/go-cluster/portal", "e3"),
                ("/ecei/benchmarking", "e1"),  # same id, other source: another event
            ],
        )
    assert found == {("/go-cluster/portal", "e1"): "d1", ("/go-cluster/portal", "e2"): "d2"}

    with pytest.raises(IntegrityError), db_engine.begin() as conn:
        messages.record_received(conn, [inbox_row("e3"), inbox_row("e1", digest="other")])
    with db_engine.begin() as conn:
        assert messages.seen(conn, [("/go-cluster/portal", "e3")]) == {}, "the batch rolled back"
        messages.record_received(conn, [{**inbox_row("e1"), "source": "/ecei/benchmarking"}])


def test_inbox_lookup_handles_more_keys_than_one_in_clause(db_engine: Engine) -> None:
    ids = [f"e{i}" for i in range(messages.IN_CLAUSE_CHUNK * 2 + 7)]
    with db_engine.begin() as conn:
        messages.record_received(conn, [inbox_row(i) for i in ids])
        found = messages.seen(conn, [("/go-cluster/portal", i) for i in [*ids, "missing"]])
    assert len(found) == len(ids)


def test_set_outcomes_updates_parked_events_later(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        messages.record_received(conn, [inbox_row("e1", "parked"), inbox_row("e2", "parked")])
        messages.set_outcomes(conn, [("/go-cluster/portal", "e1", "applied")])
    with db_engine.begin() as conn:
        outcomes = dict(conn.execute(select(inbox.c.event_id, inbox.c.outcome)).all())
    assert outcomes == {"e1": "applied", "e2": "parked"}


# -- outbox ----------------------------------------------------------------------------------


def outbox_row(event_id: str | None, stream: str = "labels", n: int = 0) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "cluster_id": "cluster-a",
        "stream": stream,
        "payload": {"id": event_id, "n": n, "nested": {"list": [1, "two", None]}},
        "created_at": NOW,
        "sent_at": None,
    }


def test_outbox_keeps_insertion_order_and_tracks_what_was_sent(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        assert messages.last_seq(conn) == 0
        messages.enqueue(conn, [outbox_row(f"o{n}", n=n) for n in range(5)])
        messages.enqueue(conn, [outbox_row(None, "dlq", 5)])
    with db_engine.begin() as conn:
        rows = messages.unsent(conn, limit=100)
        assert [r.payload["n"] for r in rows] == [0, 1, 2, 3, 4, 5]
        assert [r.seq for r in rows] == sorted(r.seq for r in rows)
        assert rows[0].payload == {"id": "o0", "n": 0, "nested": {"list": [1, "two", None]}}
        assert (rows[5].event_id, rows[5].stream) == (None, "dlq")
        assert messages.last_seq(conn) == rows[-1].seq

        messages.mark_sent(conn, [rows[0].seq, rows[2].seq], NOW)
    with db_engine.begin() as conn:
        assert [r.payload["n"] for r in messages.unsent(conn, limit=100)] == [1, 3, 4, 5]
        assert [r.payload["n"] for r in messages.unsent(conn, limit=2)] == [1, 3]
        assert [r.payload["n"] for r in messages.unsent(conn, 100, after_seq=rows[3].seq)] == [
            4,
            5,
        ]
        assert [r.payload["n"] for r in messages.since(conn, rows[1].seq, 3)] == [2, 3, 4]
        sent = dict(conn.execute(select(outbox.c.event_id, outbox.c.sent_at)).all())
    assert sent["o0"] == NOW
    assert sent["o1"] is None


def test_outbox_event_ids_are_unique_but_dlq_rows_have_none(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        messages.enqueue(conn, [outbox_row("o1"), outbox_row(None, "dlq"), outbox_row(None, "dlq")])
    with pytest.raises(IntegrityError), db_engine.begin() as conn:
        messages.enqueue(conn, [outbox_row("o1", n=99)])
    with db_engine.begin() as conn:
        assert len(messages.since(conn, 0, 100)) == 3


# -- parked events ---------------------------------------------------------------------------


def parked_event(event_id: str, cluster_id: str, parked_at: datetime) -> ParkedEvent:
    return ParkedEvent(
        None,
        cluster_id,
        "/ecei/benchmarking",
        event_id,
        datetime(2025, 11, 20, tzinfo=BERLIN),
        parked_at,
        {"id": event_id, "data": {"held_on": "2025-11-20", "result": {"n": 41}}},
        {"kind": "kafka", "topic": "gocluster.interviews", "partition": 1, "offset": 7},
    )


def test_parked_events_round_trip_per_cluster(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        messages.park(
            conn,
            [
                parked_event("i1", "cluster-a", NOW),
                parked_event("i2", "cluster-b", NOW),
                parked_event("i3", "cluster-a", NOW + timedelta(hours=1)),
            ],
        )
    with db_engine.begin() as conn:
        found = messages.parked_for(conn, ["cluster-a", "cluster-c"])
    assert set(found) == {"cluster-a"}
    first, second = found["cluster-a"]
    assert [first.event_id, second.event_id] == ["i1", "i3"], "in arrival order"
    assert first.row_id is not None
    assert first.effective_at == datetime(2025, 11, 19, 23, 0, tzinfo=UTC)
    assert first.parked_at == NOW
    assert first.event == {"id": "i1", "data": {"held_on": "2025-11-20", "result": {"n": 41}}}
    assert first.origin["offset"] == 7
    assert (first.source, first.cluster_id) == ("/ecei/benchmarking", "cluster-a")


def test_expired_parked_lists_events_parked_before_a_time(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        messages.park(
            conn,
            [
                parked_event("old", "cluster-a", NOW - timedelta(days=8)),
                parked_event("edge", "cluster-b", NOW - timedelta(days=7)),
                parked_event("young", "cluster-a", NOW - timedelta(days=6)),
            ],
        )
    with db_engine.begin() as conn:
        expired = messages.expired_parked(conn, NOW - timedelta(days=7), limit=10)
        assert [p.event_id for p in expired] == ["old", "edge"]
        assert [p.event_id for p in messages.expired_parked(conn, NOW, limit=1)] == ["old"]
        messages.unpark(conn, [p.row_id for p in expired if p.row_id is not None])
    with db_engine.begin() as conn:
        assert messages.expired_parked(conn, NOW, limit=10)[0].event_id == "young"
        remaining = messages.parked_for(conn, ["cluster-a", "cluster-b"])
    assert {k: [p.event_id for p in v] for k, v in remaining.items()} == {"cluster-a": ["young"]}


def test_unparking_an_event_someone_else_already_took_raises_stale(db_engine: Engine) -> None:
    """Two instances must not both act on one parked event (apply it and expire it)."""
    with db_engine.begin() as conn:
        messages.park(conn, [parked_event("i1", "cluster-a", NOW)])
        (parked,) = messages.parked_for(conn, ["cluster-a"])["cluster-a"]
    assert parked.row_id is not None
    with db_engine.begin() as conn:
        messages.unpark(conn, [parked.row_id])
    with pytest.raises(StaleAggregate), db_engine.begin() as conn:
        messages.unpark(conn, [parked.row_id])


# -- read views ------------------------------------------------------------------------------


def test_cluster_view_shows_state_labels_obligations_pending_timers_and_history(
    db_engine: Engine,
) -> None:
    cluster = make_cluster()
    cluster.timers[1].status = TimerStatus.FIRED
    save(db_engine, cluster, make_cluster("cluster-b"))
    with db_engine.begin() as conn:
        conn.execute(
            history.insert(),
            [
                {
                    "cluster_id": "cluster-a",
                    "at": datetime(2025, 9, 4, tzinfo=BERLIN),
                    "cause_id": f"c{n}",
                    "cause_type": "gocluster.application.assessed",
                    "from_state": "applied",
                    "to_state": "admitted",
                    "note": f"note {n}",
                    "recorded_at": NOW,
                }
                for n in range(3)
            ],
        )
    with db_engine.connect() as conn:
        view = cluster_view(conn, "cluster-a")
        assert cluster_view(conn, "nobody") is None
    assert view is not None
    assert view["cluster"]["state"] == "admitted"
    assert view["cluster"]["admitted_on"] == date(2025, 9, 4)
    assert [lb["level"] for lb in view["labels"]] == ["bronze"]
    assert [o["kind"] for o in view["obligations"]] == ["silver_label"]
    assert [t["timer_id"] for t in view["timers"]] == ["cluster-a-breach"]
    assert [h["cause_id"] for h in view["history"]] == ["c0", "c1", "c2"]
    assert view["history"][0]["at"] == datetime(2025, 9, 3, 22, 0, tzinfo=UTC)
