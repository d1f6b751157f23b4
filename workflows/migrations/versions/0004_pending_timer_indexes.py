"""timers: partial indexes over the pending timers only

The due-timer selection reads the next due timers in (due_at, cluster_id) order and
a cluster's load reads its pending timers; neither walks fired or cancelled rows.
They replace the full (status, due_at) and (cluster_id) indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_index("ix_timers_status_due_at")
        batch_op.drop_index("ix_timers_cluster_id")
        batch_op.create_index(
            "ix_timers_pending_due_at",
            ["due_at", "cluster_id"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )
        batch_op.create_index(
            "ix_timers_pending_cluster_id",
            ["cluster_id"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_index("ix_timers_pending_cluster_id")
        batch_op.drop_index("ix_timers_pending_due_at")
        batch_op.create_index("ix_timers_cluster_id", ["cluster_id"], unique=False)
        batch_op.create_index("ix_timers_status_due_at", ["status", "due_at"], unique=False)
