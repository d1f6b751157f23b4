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


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    if name is None or not name.startswith(DB_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


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
