"""The schema. Alembic migrations in workflows/migrations are generated from it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    literal_column,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

clusters = Table(
    "clusters",
    metadata,
    Column("cluster_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("cluster_name", String(500)),
    Column("organisation", String(500)),
    Column("federal_state", String(8)),
    Column("admitted_on", Date),
    Column("updated_at", UTCDateTime, nullable=False),
)

labels = Table(
    "labels",
    metadata,
    Column("label_id", String(36), primary_key=True),
    Column("cluster_id", String(64), nullable=False, index=True),
    Column("level", String(8), nullable=False),
    Column("awarded_on", Date),
    Column("valid_until", Date, nullable=False),
    Column("interview_id", String(128)),
    Column("renewal", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("cause_id", String(256), nullable=False),
)

obligations = Table(
    "obligations",
    metadata,
    Column("obligation_id", String(36), primary_key=True),
    Column("cluster_id", String(64), nullable=False, index=True),
    Column("kind", String(24), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("due_on", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("cause_id", String(256), nullable=False),
    Column("closed_by", String(256)),
)

timers = Table(
    "timers",
    metadata,
    Column("timer_id", String(36), primary_key=True),
    Column("cluster_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("ref", String(64), nullable=False),
    Column("days_left", Integer),
    Column("status", String(16), nullable=False),
    Column("closed_at", UTCDateTime),  # when it fired or was cancelled (retention)
    Index("ix_timers_closed_at", "closed_at"),
)

# Fired and cancelled timers only wait for retention: the indexes that firing and
# loading use hold the pending ones alone. A query uses them when it states this very
# predicate, with the literal (a bound parameter would hide it from the planners).
PENDING_TIMER = timers.c.status == literal_column("'pending'")
Index(
    "ix_timers_pending_due_at",
    timers.c.due_at,
    timers.c.cluster_id,
    postgresql_where=PENDING_TIMER,
    sqlite_where=PENDING_TIMER,
)
Index(
    "ix_timers_pending_cluster_id",
    timers.c.cluster_id,
    postgresql_where=PENDING_TIMER,
    sqlite_where=PENDING_TIMER,
)

history = Table(
    "history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("cluster_id", String(64), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("cause_id", String(256), nullable=False),
    Column("cause_type", String(64), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("note", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("source", String(1024), primary_key=True),
    Column("event_id", String(256), primary_key=True),
    Column("cluster_id", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_inbox_received_at", "received_at"),  # retention deletes the oldest first
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(64)),
    Column("cluster_id", String(64)),
    Column("stream", String(16), nullable=False),  # labels|deadlines|membership|dlq
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    UniqueConstraint("event_id"),
    Index("ix_outbox_sent_at_seq", "sent_at", "seq"),
)

parked = Table(
    "parked",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("cluster_id", String(64), nullable=False, index=True),
    Column("source", String(1024), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("effective_at", UTCDateTime, nullable=False),
    Column("parked_at", UTCDateTime, nullable=False),
    Column("event", JSON, nullable=False),
    Column("origin", JSON, nullable=False),
    # Which parked events a state may release is decided by type (NULL: parked before
    # the column existed, always looked at); read in effective-time order per cluster.
    Column("event_type", String(64)),
    Index("ix_parked_cluster_id_effective_at", "cluster_id", "effective_at"),
    Index("ix_parked_parked_at", "parked_at"),
)

# When to look at a cluster's parked events again without a change of its state:
# the earliest effective time among those parked because they lay beyond the service
# clock, or at once for a release that stopped at its per-transaction budget.
parked_wakeups = Table(
    "parked_wakeups",
    metadata,
    Column("cluster_id", String(64), primary_key=True),
    Column("wake_at", UTCDateTime, nullable=False, index=True),
)

# One row per named lease (the outbox relay's leadership): who holds it and until when,
# by the database's clock.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Per input partition, the offset of the next record to apply: advanced in each batch's
# transaction, so a batch skips what the partition's owner of the moment already applied.
partition_progress = Table(
    "partition_progress",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
