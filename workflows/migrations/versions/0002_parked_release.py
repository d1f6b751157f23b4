"""parked events: type, effective-time and parked-at indexes, wake-ups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('parked_wakeups',
    sa.Column('cluster_id', sa.String(length=64), nullable=False),
    sa.Column('wake_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('cluster_id', name=op.f('pk_parked_wakeups'))
    )
    with op.batch_alter_table('parked_wakeups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_parked_wakeups_wake_at'), ['wake_at'], unique=False)

    with op.batch_alter_table('parked', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_type', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_parked_cluster_id_effective_at', ['cluster_id', 'effective_at'], unique=False)
        batch_op.create_index('ix_parked_parked_at', ['parked_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('parked', schema=None) as batch_op:
        batch_op.drop_index('ix_parked_parked_at')
        batch_op.drop_index('ix_parked_cluster_id_effective_at')
        batch_op.drop_column('event_type')

    with op.batch_alter_table('parked_wakeups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_parked_wakeups_wake_at'))

    op.drop_table('parked_wakeups')
