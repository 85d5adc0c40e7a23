"""driver fencing token, lease, generation, send attempts; the outbox

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('driver_seq', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('generation', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('send_attempts', sa.Integer(), nullable=False, server_default='0'))
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False, autoincrement=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('transaction_id', sa.String(length=40), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.Integer(), nullable=False),
    sa.Column('countdown_ms', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_transaction_id'), ['transaction_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_transaction_id'))
        batch_op.drop_index('ix_outbox_due')
    op.drop_table('outbox')
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.drop_column('send_attempts')
        batch_op.drop_column('generation')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('driver_seq')
