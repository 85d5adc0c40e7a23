"""per-chain confirmation trackers: transactions.tracked_at, chain_trackers

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chain_trackers',
    sa.Column('chain', sa.String(length=32), nullable=False),
    sa.Column('cursor', sa.Text(), nullable=False),
    sa.Column('lease_token', sa.BigInteger(), nullable=False),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('ticked_at', sa.DateTime(), nullable=True),
    sa.Column('head', sa.BigInteger(), nullable=True),
    sa.Column('tracked', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('chain')
    )
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tracked_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_tx_tracked', ['chain', 'tracked_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_tx_tracked')
        batch_op.drop_column('tracked_at')
    op.drop_table('chain_trackers')
