"""Throwaway databases for the storage contract suite (SQLite files, PostgreSQL databases).

A PostgreSQL database per test costs ~30 ms to create and ~10 ms to drop on the
dev box, so every test gets a real, empty database of its own rather than a
schema inside a shared one: its URL is an ordinary URL that a `gocluster`
subprocess can use as GOCLUSTER_DATABASE_URL.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import Engine, column, func, select, table
from sqlalchemy.engine import make_url

# The login role scripts/ensure-test-machine.sh creates (CREATEDB, password auth on TCP).
ADMIN_URL = os.environ.get(
    "GOCLUSTER_TEST_POSTGRES_URL",
    "postgresql+psycopg://gocluster:gocluster@127.0.0.1:5432/postgres",
)
DB_PREFIX = "gocluster_t_"


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab...) means a missing service is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _libpq(url: str) -> str:
    """psycopg wants a plain `postgresql://` URL, not SQLAlchemy's `+psycopg` form."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_problem(admin_url: str) -> str | None:
    """Why the server cannot be used, or None when it can."""
    try:
        with psycopg.connect(_libpq(admin_url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip()}"
    return None


def create_postgres_database(admin_url: str) -> str:
    """A new empty database; returns its SQLAlchemy URL."""
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str, attempts: int = 40) -> None:
    """Drop a test database and end its sessions. An autovacuum worker inside it can
    make the drop refuse for a moment (without pg_signal_backend); that is retried."""
    name = make_url(url).database
    if name is None or not name.startswith(DB_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        for attempt in range(attempts):
            try:
                conn.execute(statement)
                return
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.25)


def sqlite_file_url(directory: Path, name: str = "gocluster.db") -> str:
    return f"sqlite:///{directory / name}"


def lock_waiters(engine: Engine) -> int:
    """Sessions of this database now waiting for a lock (row, advisory...) held by another."""
    activity = table("pg_stat_activity", column("datname"), column("wait_event_type"))
    query = (
        select(func.count())
        .select_from(activity)
        .where(activity.c.datname == func.current_database())
        .where(activity.c.wait_event_type == "Lock")
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def wait_for_lock_waiter(
    engine: Engine, timeout_s: float = 10, done: Callable[[], bool] = lambda: False
) -> bool:
    """True once some session waits for a lock; False if `done()` or the timeout comes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if lock_waiters(engine):
            return True
        if done():
            return False
        time.sleep(0.01)
    return False


def set_read_only(admin_url: str, url: str, read_only: bool) -> None:
    """New sessions of the database start read-only (or writable again): what a failover
    to a standby, or `default_transaction_read_only` set by an operator, looks like.

    Sessions already open keep their setting; `terminate_sessions` makes them reconnect.
    """
    name = make_url(url).database
    if name is None or not name.startswith(DB_PREFIX):
        raise ValueError(f"refusing to alter {name!r}: not a test database")
    value = sql.SQL("on" if read_only else "off")
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                sql.Identifier(name), value
            )
        )


def terminate_sessions(admin_url: str, url: str) -> int:
    """Close every session of the database from the server side (a failover drops them all)."""
    name = make_url(url).database
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        done = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(done[0]) if done else 0


def sessions_holding_locks(
    admin_url: str, url: str, application_name: str, state: str | None = None
) -> dict[int, str]:
    """Backend pid -> start of its open transaction, for one client's sessions whose
    transaction holds locks that others may wait for (row locks give it an xid).

    `state` "active" finds only sessions waiting in mid-request for their client (in
    a pipeline), "idle in transaction" those between two requests.
    """
    name = make_url(url).database
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.pid, a.xact_start::text FROM pg_stat_activity a WHERE a.datname = %s "
            "AND a.application_name = %s AND a.xact_start IS NOT NULL AND "
            "(a.backend_xid IS NOT NULL OR EXISTS (SELECT 1 FROM pg_locks l "
            "WHERE l.pid = a.pid AND l.granted AND l.locktype = 'advisory')) AND "
            "(%s::text IS NULL OR (a.state = %s AND a.wait_event = 'ClientRead'))",
            (name, application_name, state, state),
        ).fetchall()
    return {int(pid): str(start) for pid, start in rows}
