"""Intake: per-record event numbers (the envelope's sequence), the last case event each
complaint's status follows, and the inbox of intake's event handlers.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from shared.messaging import inbox

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    # Rows registered before this revision published exactly one event each.
    op.add_column("complaints", sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="1"))
    op.alter_column("complaints", "last_sequence", server_default="0")
    op.add_column("complaints", sa.Column("status_sequence", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("sales", sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="1"))
    op.alter_column("sales", "last_sequence", server_default="0")
    inbox.create_tables_v1(op)


def downgrade():
    op.drop_table("inbox")
    op.drop_column("sales", "last_sequence")
    op.drop_column("complaints", "status_sequence")
    op.drop_column("complaints", "last_sequence")
