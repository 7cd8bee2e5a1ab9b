"""Intake: indexes on the time of idempotency keys and inbox rows, so that the retention purge
finds the old rows without scanning either table.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

from shared.messaging import inbox
from shared.persistence import idempotency

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    idempotency.add_purge_index(op)
    inbox.add_purge_index(op)


def downgrade():
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
