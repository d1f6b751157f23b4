"""Engine creation and schema migrations.

SQLite (the embedded default) is one writer at a time: transactions start with
BEGIN IMMEDIATE so two processes never deadlock on a lock upgrade, and WAL
lets `gocluster show` read while the service writes. PostgreSQL is the
multi-instance backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class SchemaOutOfDate(RuntimeError):
    """The database is not at the code's schema revision."""


def normalise_url(url: str) -> str:
    """Plain `postgresql://` URLs use psycopg 3, the driver this service ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        _create_private(make_url(url).database)
        engine = create_engine(url, **kwargs)
        _sqlite_pragmas(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {"connect_timeout": 10})
    return create_engine(url, **kwargs)


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
