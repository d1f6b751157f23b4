"""Durable timers: how fast a due backlog drains, and how late a timer fires while idle.

Drain: a fresh database holds `--pending` pending timers, `--due` of them due; they
are bulk-inserted (with their clusters and obligations, three timers per cluster:
two reminders and a breach, as an open obligation has), not produced by events.
Then `fire_due_timers` runs round after round, as the timer loop does, until the
first `--fire` timers have fired: the rate is timers fired per second of those
rounds. Each size is seeded once per backend into a template (a copied SQLite file,
a PostgreSQL `CREATE DATABASE ... TEMPLATE`), and every run drains a fresh copy.

Lag: the timer loop (consumers/timer_loop.TimerLoop, the wall clock) runs in this
process over a database with `--lag-timers` reminders coming due one by one over
`--lag-spread` seconds; the lag of a timer is the wall time its round returned
minus its due time.

Runs against whatever `workflows` is importable, so the code before a change can be
measured from an export of it:

    git archive <commit> | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before .venv/bin/python /tmp/before/bench/timers.py --label before

Results go to bench/results/timers.json (merged by `--label`). Not a test: nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, Table, func, select
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too

from bench.harness import (
    ADMIN_URL,
    DB_PREFIX,
    RESULTS,
    database,
    machine,
    percentile,
    quiet_service_logs,
    scratch_dir,
    spread,
)
from consumers.timer_loop import TimerLoop
from workflows.dates import FixedClock, WallClock
from workflows.engine import BatchResult, Workflow
from workflows.policy import load_policy
from workflows.store.database import create_db_engine
from workflows.store.tables import clusters, obligations, timers

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SOURCE = "/go-cluster/service"
CHUNK = 20_000
TIMERS_PER_CLUSTER = 3  # reminders 90 and 30 days before, the breach on the day


# -- seeding -------------------------------------------------------------------


def _cluster_rows(first: int, count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "cluster_id": f"{prefix}{n:07d}",
            "state": "admitted",
            "cycle": 1,
            "version": 1,
            "cluster_name": f"Cluster {n}",
            "organisation": "Bench e.V.",
            "federal_state": "BY",
            "admitted_on": date(2020, 1, 1),
            "updated_at": NOW,
        }
        for n in range(first, first + count)
    ]


def _obligation_row(cluster_id: str, due_on: date) -> dict[str, Any]:
    return {
        "obligation_id": f"o-{cluster_id}",
        "cluster_id": cluster_id,
        "kind": "silver_label",
        "cycle": 1,
        "due_on": due_on,
        "status": "open",
        "cause_id": "seed",
        "closed_by": None,
    }


def _timer_row(cluster_id: str, kind: str, due_at: datetime, days: int | None) -> dict[str, Any]:
    return {
        "timer_id": f"t-{cluster_id}-{kind}-{days}",
        "cluster_id": cluster_id,
        "kind": kind,
        "due_at": due_at,
        "ref": f"o-{cluster_id}",
        "days_left": days,
        "status": "pending",
        "closed_at": None,
    }


def seed_backlog(engine: Engine, pending: int, due: int, now: datetime = NOW) -> None:
    """`pending` timers on pending // 3 clusters; the first due // 3 clusters' are all due.

    Due obligations fall due a minute apart, the clusters interleaved so that the
    next due timers belong to different clusters; the rest fall due in the future.
    """
    total = pending // TIMERS_PER_CLUSTER
    due_clusters = due // TIMERS_PER_CLUSTER
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        cluster_rows = _cluster_rows(start, count, "c")
        obligation_rows, timer_rows = [], []
        for n, row in enumerate(cluster_rows, start):
            if n < due_clusters:  # the breach is past the late-result allowance too
                breach = now - timedelta(days=30, minutes=due_clusters - n)
            else:
                breach = now + timedelta(days=200, minutes=n)
            cid = row["cluster_id"]
            obligation_rows.append(_obligation_row(cid, breach.date()))
            timer_rows += [
                _timer_row(cid, "reminder", breach - timedelta(days=90), 90),
                _timer_row(cid, "reminder", breach - timedelta(days=30), 30),
                _timer_row(cid, "breach", breach, None),
            ]
        bulk_insert(
            engine, {clusters: cluster_rows, obligations: obligation_rows, timers: timer_rows}
        )


def seed_idle(engine: Engine, count: int, first_due: datetime, spread_s: float) -> list[datetime]:
    """`count` clusters with one reminder each, due one after the other over `spread_s`."""
    rows = _cluster_rows(0, count, "lag")
    step = spread_s / max(1, count - 1)
    dues = [first_due + timedelta(seconds=n * step) for n in range(count)]
    far = (datetime.now(UTC) + timedelta(days=400)).date()
    bulk_insert(
        engine,
        {
            clusters: rows,
            obligations: [_obligation_row(r["cluster_id"], far) for r in rows],
            timers: [
                _timer_row(r["cluster_id"], "reminder", d, 30)
                for r, d in zip(rows, dues, strict=True)
            ],
        },
    )
    return dues


def _sqlite_value(value: Any) -> Any:
    """As SQLAlchemy stores it in SQLite (UTCDateTime: naive UTC, microseconds)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


def bulk_insert(engine: Engine, batches: dict[Table, list[dict[str, Any]]]) -> None:
    """Rows straight through the driver (COPY on PostgreSQL), in one transaction."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")  # the service's connections autocommit
        for table, rows in batches.items():
            names = list(rows[0])
            if engine.dialect.name == "sqlite":
                marks = ", ".join("?" for _ in names)
                cursor.executemany(
                    f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})",  # noqa: S608
                    [tuple(_sqlite_value(r[n]) for n in names) for r in rows],
                )
                continue
            copy_sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for r in rows:
                    copy.write_row(tuple(r[n] for n in names))
        raw.commit()
    finally:
        raw.close()


# -- copies of a seeded database -------------------------------------------------


@contextlib.contextmanager
def copy_of(template_url: str, directory: Path) -> Iterator[str]:
    """A fresh copy of a seeded database for one run, removed afterwards."""
    url = make_url(template_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        path = directory / f"copy-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(url.database, path)
        try:
            yield f"sqlite:///{path}"
        finally:
            path.unlink(missing_ok=True)
        return
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(url.database))
            )
        )
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _analyze(engine: Engine) -> None:
    """Planner statistics as a running database would have them after a bulk load."""
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


# -- measurements --------------------------------------------------------------


def drain(url: str, fire: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    try:
        workflow = Workflow(engine, load_policy(), FixedClock(NOW), SOURCE)
        fired, rounds = 0, []
        started = time.perf_counter()
        while fired < fire:
            began = time.perf_counter()
            result = workflow.fire_due_timers(until=NOW, allow_late_results=True)
            rounds.append(time.perf_counter() - began)
            if result.timers_fired == 0:
                break
            fired += result.timers_fired
        elapsed = time.perf_counter() - started
        return {
            "fired": fired,
            "seconds": round(elapsed, 3),
            "timers_per_s": round(fired / elapsed, 1),
            "rounds": len(rounds),
            "round_s_median": round(statistics.median(rounds), 4),
            "round_s_max": round(max(rounds), 4),
        }
    finally:
        engine.dispose()


class _Recording(Workflow):
    """The service's workflow, noting when each timer's round returned."""

    fired_at: dict[str, float]

    def fire_due_timers(
        self, until: datetime | None = None, limit: int = 200, *, allow_late_results: bool = False
    ) -> BatchResult:
        result = super().fire_due_timers(until, limit, allow_late_results=allow_late_results)
        returned = time.time()
        for output in result.outputs:
            self.fired_at.setdefault(output["data"]["cause_id"], returned)
        return result


def idle_lag(url: str, count: int, spread_s: float, background: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    stop = threading.Event()
    try:
        if background:
            seed_backlog(engine, background, 0, datetime.now(UTC))
            _analyze(engine)
        dues = seed_idle(engine, count, datetime.now(UTC) + timedelta(seconds=2), spread_s)
        with engine.connect() as conn:
            ids = list(
                conn.execute(
                    select(timers.c.timer_id, timers.c.due_at).where(
                        timers.c.cluster_id.like("lag%")
                    )
                )
            )
        workflow = _Recording(engine, load_policy(), WallClock(), SOURCE)
        workflow.fired_at = {}
        loop = TimerLoop(workflow, WallClock(), stop)
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + spread_s + 30
        while time.monotonic() < deadline and len(workflow.fired_at) < count:
            time.sleep(0.2)
        stop.set()
        thread.join(30)
        lags = sorted(
            workflow.fired_at[tid] - due.timestamp() for tid, due in ids if tid in workflow.fired_at
        )
        return {
            "timers": count,
            "fired": len(lags),
            "spread_s": spread_s,
            "background_pending": background,
            "first_due": dues[0].isoformat(),
            "lag_s_p50": round(percentile(lags, 50), 3),
            "lag_s_p99": round(percentile(lags, 99), 3),
            "lag_s_max": round(lags[-1], 3) if lags else None,
        }
    finally:
        stop.set()
        engine.dispose()


# -- the runs ------------------------------------------------------------------


def drain_runs(
    backend: str, directory: Path, pending: int, due: int, fire: int, runs: int
) -> dict[str, Any]:
    with database(backend, directory) as template:
        engine = create_db_engine(template)
        try:
            began = time.perf_counter()
            seed_backlog(engine, pending, due)
            _analyze(engine)
            seeded = time.perf_counter() - began
            with engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(timers)).scalar_one()
        finally:
            engine.dispose()
        results = []
        for _ in range(runs):
            with copy_of(template, directory) as url:
                results.append(drain(url, min(fire, due)))
            print(json.dumps({"backend": backend, "due": due, **results[-1]}), flush=True)
    return {
        "pending": count,
        "due": due,
        "seed_s": round(seeded, 1),
        "timers_per_s": spread((r["timers_per_s"] for r in results), 1),
        "round_s_median": spread((r["round_s_median"] for r in results), 4),
        "runs": results,
    }


def lag_runs(
    backend: str, directory: Path, count: int, spread_s: float, background: int, runs: int
) -> dict[str, Any]:
    results = []
    for _ in range(runs):
        with database(backend, directory) as url:
            results.append(idle_lag(url, count, spread_s, background))
        print(json.dumps({"backend": backend, "lag": results[-1]}), flush=True)
    return {
        "lag_s_p99": spread((r["lag_s_p99"] for r in results), 3),
        "lag_s_p50": spread((r["lag_s_p50"] for r in results), 3),
        "runs": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, action="append", help="default: 10,000 and 700,000")
    parser.add_argument("--fire", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lag-timers", type=int, default=200)
    parser.add_argument("--lag-spread", type=float, default=20.0)
    parser.add_argument("--lag-background", type=int, default=30_000)
    parser.add_argument("--no-lag", action="store_true")
    parser.add_argument("--no-drain", action="store_true")
    parser.add_argument("--label", default="after", help="key of this run in the results")
    parser.add_argument("--out", type=Path, default=RESULTS / "timers.json")
    args = parser.parse_args(argv)
    quiet_service_logs()
    backends = args.backend or ["sqlite", "postgres"]
    dues = args.due or [10_000, 700_000]
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "pending": args.pending,
            "fire": args.fire,
            "runs": args.runs,
            "lag_timers": args.lag_timers,
            "lag_spread_s": args.lag_spread,
            "lag_background": args.lag_background,
        },
        "drain": {},
        "lag": {},
    }
    with scratch_dir() as directory:
        for backend in backends:
            if not args.no_drain:
                report["drain"][backend] = {
                    str(due): drain_runs(
                        backend, directory, args.pending, due, args.fire, args.runs
                    )
                    for due in dues
                }
            if not args.no_lag:
                report["lag"][backend] = lag_runs(
                    backend,
                    directory,
                    args.lag_timers,
                    args.lag_spread,
                    args.lag_background,
                    args.runs,
                )
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    stored[args.label] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps({args.label: {"drain": report["drain"], "lag": report["lag"]}}, indent=1))


if __name__ == "__main__":
    main()
