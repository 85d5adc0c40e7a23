"""api secrets sealed, wallet key lifecycle, webhook events

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_events',
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('resource_id', sa.String(length=40), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_events_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_events_resource_id'), ['resource_id'], unique=False)

    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('attempted_at', sa.DateTime(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.event_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('webhook_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_attempts_event_id'), ['event_id'], unique=False)

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_secret_sealed', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('webhook_events', sa.Text(), nullable=False, server_default='[]'))
        batch_op.alter_column('api_secret_hash',
               existing_type=sa.VARCHAR(length=200),
               nullable=True)

    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decimals', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('event_seq', sa.Integer(), nullable=False, server_default='0'))

    with op.batch_alter_table('wallets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure_reason', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('failure_detail', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('key_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('key_due_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('event_seq', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(), nullable=False, server_default=sa.func.now()))
    # Transfers from before 0003: the token's decimals from their source asset, where resolved.
    op.execute("UPDATE transactions SET decimals = (SELECT assets.decimals FROM assets "
               "WHERE assets.asset_id = transactions.asset_id) WHERE asset_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('wallets', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('event_seq')
        batch_op.drop_column('key_due_at')
        batch_op.drop_column('key_attempts')
        batch_op.drop_column('failure_detail')
        batch_op.drop_column('failure_reason')

    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.drop_column('event_seq')
        batch_op.drop_column('decimals')

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.alter_column('api_secret_hash',
               existing_type=sa.VARCHAR(length=200),
               nullable=False)
        batch_op.drop_column('webhook_events')
        batch_op.drop_column('api_secret_sealed')

    with op.batch_alter_table('webhook_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_attempts_event_id'))

    op.drop_table('webhook_attempts')
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_events_resource_id'))
        batch_op.drop_index(batch_op.f('ix_webhook_events_client_id'))
        batch_op.drop_index('ix_webhook_due')

    op.drop_table('webhook_events')
