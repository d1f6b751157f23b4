"""Named leases in PostgreSQL: one holder at a time, until the lease expires unrenewed.

Expiry is judged by the database's clock (`clock_timestamp()`), never an
instance's own, so instances with skewed clocks agree on when a lease is free.
A holder that was paused past its expiry finds another name in the row when it
wakes, and its renewal fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, DateTime, Interval, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from workflows.store.tables import leases

_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> object:
    return func.clock_timestamp(type_=DateTime(timezone=True))


def acquire(conn: Connection, name: str, holder: str, seconds: float) -> bool:
    """Take the lease if it is free or already ours, and extend it by `seconds`."""
    length = bindparam("length", timedelta(seconds=seconds), type_=Interval())
    take = (
        update(leases)
        .where(leases.c.name == name)
        .where(or_(leases.c.holder == holder, leases.c.expires_at <= _now()))
        .values(holder=holder, expires_at=_now() + length)
    )
    if conn.execute(take).rowcount == 1:
        return True
    # The first time ever, the row is not there yet: create it expired, then take it.
    conn.execute(
        insert(leases)
        .values(name=name, holder="", expires_at=_NEVER)
        .on_conflict_do_nothing(index_elements=[leases.c.name])
    )
    return conn.execute(take).rowcount == 1


def holds(conn: Connection, name: str, holder: str) -> bool:
    """Whether `holder` has the lease now (a read: it works on a read-only database)."""
    query = select(leases.c.name).where(
        leases.c.name == name, leases.c.holder == holder, leases.c.expires_at > _now()
    )
    return conn.execute(query).first() is not None


def release(conn: Connection, name: str, holder: str) -> None:
    """Expire our lease now, so that another instance need not wait for it."""
    conn.execute(
        update(leases)
        .where(leases.c.name == name, leases.c.holder == holder)
        .values(expires_at=_now())
    )
