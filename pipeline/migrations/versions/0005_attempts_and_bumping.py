"""fee bumping and nonce gaps: transaction_attempts; transactions.kind, stuck_reason, bump clock

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import pipeline.models


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('transaction_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('transaction_id', sa.String(length=40), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('tx_hash', sa.String(length=128), nullable=False),
    sa.Column('nonce', sa.BigInteger(), nullable=True),
    sa.Column('fee_params', sa.Text(), nullable=True),
    sa.Column('max_fee', pipeline.models.BaseUnits(length=80), nullable=True),
    sa.Column('signed_payload', sa.LargeBinary(), nullable=False),
    sa.Column('build_context', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('signed_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.transaction_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('transaction_id', 'number', name='uq_attempt_number')
    )
    with op.batch_alter_table('transaction_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_transaction_attempts_transaction_id', ['transaction_id'], unique=False)
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=8), server_default='TRANSFER', nullable=False))
        batch_op.add_column(sa.Column('stuck_reason', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('bump_armed_head', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('bump_armed_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.drop_column('bump_armed_at')
        batch_op.drop_column('bump_armed_head')
        batch_op.drop_column('stuck_reason')
        batch_op.drop_column('kind')
    with op.batch_alter_table('transaction_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_transaction_attempts_transaction_id')
    op.drop_table('transaction_attempts')
