"""Bulk inserts of the rows events write (inbox, history, outbox; new clusters,
labels, obligations and timers), without SQLAlchemy's per-row parameter processing.

`conn.execute(insert(table), rows)` builds and processes a parameter set per row through
its generic machinery; on the tables a batch inserts into that is a sizeable share of
the batch. Here the INSERT is compiled once per table, columns and dialect, and the rows
go to `exec_driver_sql` (so errors, events and the transaction stay SQLAlchemy's) with
only the bind processors their columns have (UTC datetimes, JSON): the stored values are
the ones `conn.execute(insert(table), rows)` stores. Everything else stays on Core.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table, insert


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys) into `table` in one executemany."""
    if not rows:
        return
    sql, names, processors = _prepared(table, tuple(rows[0]), conn.dialect)
    if conn.dialect.positional:
        conn.exec_driver_sql(sql, [_positional(row, names, processors) for row in rows])
    else:
        conn.exec_driver_sql(sql, [_named(row, names, processors) for row in rows])


Processor = Callable[[Any], Any] | None


@functools.cache
def _prepared(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> tuple[str, tuple[str, ...], tuple[Processor, ...]]:
    """(SQL, bind names in parameter order, the columns' bind processors in that order)."""
    # inline: no RETURNING of the generated key, which an executemany would not read
    compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(columns))
    names = tuple(compiled.positiontup or ()) if dialect.positional else columns
    processors = tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    return compiled.string, names, processors


def _positional(
    row: dict[str, Any], names: tuple[str, ...], processors: tuple[Processor, ...]
) -> tuple[Any, ...]:
    return tuple(
        row[name] if process is None else process(row[name])
        for name, process in zip(names, processors, strict=True)
    )


def _named(
    row: dict[str, Any], names: tuple[str, ...], processors: tuple[Processor, ...]
) -> dict[str, Any]:
    return {
        name: row[name] if process is None else process(row[name])
        for name, process in zip(names, processors, strict=True)
    }
