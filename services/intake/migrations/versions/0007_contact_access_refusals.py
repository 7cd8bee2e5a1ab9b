"""Intake: the contact access log keeps refused reads too (outcome, reason); a refused id may
name no record, so its type and branch may be unknown.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    # Rows written before this revision were all granted reads.
    op.add_column("contact_access_log", sa.Column("outcome", sa.Text, nullable=False, server_default="granted"))
    op.alter_column("contact_access_log", "outcome", server_default=None)
    op.add_column("contact_access_log", sa.Column("reason", sa.Text))
    op.alter_column("contact_access_log", "record_type", nullable=True)
    op.alter_column("contact_access_log", "branch_code", nullable=True)


def downgrade():
    op.execute("DELETE FROM contact_access_log WHERE outcome = 'refused'")
    op.alter_column("contact_access_log", "branch_code", nullable=False)
    op.alter_column("contact_access_log", "record_type", nullable=False)
    op.drop_column("contact_access_log", "reason")
    op.drop_column("contact_access_log", "outcome")
