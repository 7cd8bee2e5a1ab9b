"""Intake: indexes on the time of idempotency keys and inbox rows, so that the retention purge
finds the old rows without scanning either table.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    # Built without blocking writes to a big table.
    with op.get_context().autocommit_block():
        op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"],
                        postgresql_concurrently=True, if_not_exists=True)
        op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"], postgresql_concurrently=True,
                        if_not_exists=True)


def downgrade():
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
