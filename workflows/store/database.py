"""Engine creation and schema migrations.

SQLite (the embedded default) is one writer at a time: transactions start with
BEGIN IMMEDIATE so two processes never deadlock on a lock upgrade, and WAL
lets `gocluster show` read while the service writes. PostgreSQL is the
multi-instance backend; its sessions carry the limits of `SessionLimits`, so
a paused or vanished instance cannot hold locks for ever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import SQLAlchemyError

log = structlog.get_logger("gocluster.database")

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "gocluster/"  # + the process id: how instances find each other's sessions
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class SessionLimits:
    """PostgreSQL session settings against a paused, frozen or vanished instance.

    - `lock_timeout`: a statement waiting longer for a lock fails, and its batch is
      retried with backoff, instead of stalling its partition behind a stuck holder.
    - `idle_in_transaction_session_timeout`: the server ends a session that sits
      inside a transaction without sending anything (a SIGSTOPped process, a frozen
      VM), which releases its locks. The service never waits on anything else
      inside a transaction, so only a stuck instance reaches it.
    - TCP keepalives both ways: the server's `tcp_keepalives_*` notice a client whose
      host is gone; libpq's `keepalives*` notice a server that is (failover).
    - The server's idle timer does not cover every frozen client: one stopped in the
      middle of a pipeline leaves its session "active", and after a pipelined
      executemany psycopg sends a Flush that disarms the timer although the session
      shows "idle in transaction" (PostgreSQL 17's `transaction_timeout` would cover
      both). So when a statement gives up on a lock, the instance ends the gocluster
      sessions that have waited on their client inside a transaction for longer than
      the idle timeout (`end_stuck_sessions`).
    Zero turns a timeout off, as in PostgreSQL.
    """

    lock_timeout_ms: int = 30_000
    idle_in_transaction_timeout_ms: int = 60_000
    keepalives_idle_s: int = 30
    keepalives_interval_s: int = 10
    keepalives_count: int = 3

    def connect_args(self, query: Any) -> dict[str, Any]:
        """psycopg connection keywords; `options` or an application_name in the URL stay."""
        options = " ".join(
            f"-c {name}={value}"
            for name, value in (
                ("lock_timeout", self.lock_timeout_ms),
                ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout_ms),
                ("tcp_keepalives_idle", self.keepalives_idle_s),
                ("tcp_keepalives_interval", self.keepalives_interval_s),
                ("tcp_keepalives_count", self.keepalives_count),
            )
        )
        if query.get("options"):
            options = f"{options} {query['options']}"  # later settings win
        return {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle_s,
            "keepalives_interval": self.keepalives_interval_s,
            "keepalives_count": self.keepalives_count,
            "options": options,
            # pg_stat_activity then says which instance holds a lock.
            "application_name": query.get("application_name") or f"{APPLICATION_NAME}{os.getpid()}",
        }


class SchemaOutOfDate(RuntimeError):
    """The database is not at the code's schema revision."""


def normalise_url(url: str) -> str:
    """Plain `postgresql://` URLs use psycopg 3, the driver this service ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, limits: SessionLimits | None = None, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_private(parsed.database)
        engine = create_engine(url, **kwargs)
        _sqlite_pragmas(engine)
        return engine
    limits = limits or SessionLimits()
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", limits.connect_args(parsed.query))
    engine = create_engine(url, **kwargs)
    if limits.idle_in_transaction_timeout_ms:
        _end_stuck_sessions_on_lock_timeout(engine, limits.idle_in_transaction_timeout_ms)
    return engine


def end_stuck_sessions(conn: Connection, stuck_ms: int) -> list[int]:
    """End the gocluster sessions of this database that have waited on their client
    inside a transaction for longer than `stuck_ms`; returns their pids."""
    query = text(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name LIKE :ours AND xact_start IS NOT NULL "
        "AND wait_event IN ('ClientRead', 'ClientWrite') "
        "AND state_change < clock_timestamp() - make_interval(secs => :seconds)"
    )
    rows = conn.execute(query, {"ours": f"{APPLICATION_NAME}%", "seconds": stuck_ms / 1000})
    return [int(pid) for pid, ended in rows if ended]


def _end_stuck_sessions_on_lock_timeout(engine: Engine, stuck_ms: int) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if getattr(context.original_exception, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            return
        try:
            with engine.connect() as conn:
                ended = end_stuck_sessions(conn, stuck_ms)
                conn.commit()
        except SQLAlchemyError:
            return  # the statement's own error is what the caller handles
        if ended:
            log.warning(
                "ended database sessions stuck inside a transaction", pids=ended, stuck_ms=stuck_ms
            )


def _create_private(database: str | None) -> None:
    """The database file holds every event producers sent: readable by its owner only,
    whatever the umask. SQLite gives its -wal and -shm files the same mode. An existing
    file keeps the mode its operator gave it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:  # it exists, or its folder does not: SQLite names the problem at connect
        return
    os.close(fd)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


# SQLite's PRAGMA takes no bound parameters: these are literals. A writer waits up to
# 30 s for the lock another writer holds.
_WRITER_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
)
_READER_PRAGMAS = ("PRAGMA busy_timeout=30000", "PRAGMA query_only=ON")


def _sqlite_pragmas(
    engine: Engine, pragmas: tuple[str, ...] = _WRITER_PRAGMAS, *, immediate: bool = True
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if immediate:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN DEFERRED")


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", "workflows:migrations")
    config.attributes["engine"] = engine
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    command.upgrade(_alembic_config(engine), "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Back to `revision` (`base`: empty): for a rollback to a version that needs it."""
    command.downgrade(_alembic_config(engine), revision)


def ensure_schema(engine: Engine) -> None:
    """SQLite upgrades itself so the embedded default needs no step; a shared
    PostgreSQL is migrated on purpose (`gocluster db upgrade`)."""
    if current_revision(engine) == head_revision(engine):
        return
    if is_sqlite(engine):
        upgrade(engine)
        return
    require_current_schema(engine)


def require_current_schema(engine: Engine) -> None:
    """Refuse a database the code cannot read or write correctly, with the instruction to fix it."""
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `gocluster db upgrade`"
        )


def create_read_engine(url: str) -> Engine:
    """An engine whose sessions cannot write: the programme office's views.

    SQLite: a deferred BEGIN, so a WAL reader never holds the write lock the
    service needs (the writers' engine begins IMMEDIATE), and `query_only`.
    PostgreSQL: read-only REPEATABLE READ transactions, so the several queries
    of one view see one snapshot. The database refuses any write either way.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path not in ("", ":memory:") and not Path(path).exists():
            # Connecting would create an empty file where a reader expected data.
            raise SchemaOutOfDate(
                f"no SQLite database at {path}: `gocluster run` or `replay` creates it"
            )
        engine = create_engine(url)
        _sqlite_pragmas(engine, _READER_PRAGMAS, immediate=False)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        isolation_level="REPEATABLE READ",
        connect_args={
            "connect_timeout": 10,
            "options": "-c default_transaction_read_only=on",
        },
    )
