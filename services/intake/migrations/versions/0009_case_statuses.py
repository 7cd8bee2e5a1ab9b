"""Intake: a complaint's status in the words the front desk uses with customers (received,
acknowledged, investigating, resolved, closed). Rows that followed a case under the older words
take the new ones: open -> received, in_progress -> acknowledged (a case assigned but not yet
answered reads as acknowledged: the older word did not tell them apart), reopened ->
investigating.

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_RENAMED = {"open": "received", "in_progress": "acknowledged", "reopened": "investigating"}


def upgrade():
    for old, new in _RENAMED.items():
        op.execute(f"UPDATE complaints SET status = '{new}' WHERE status = '{old}'")


def downgrade():
    op.execute("UPDATE complaints SET status = 'open' WHERE status = 'received' AND status_sequence > 0")
    op.execute("UPDATE complaints SET status = 'in_progress' WHERE status = 'acknowledged'")
    op.execute("UPDATE complaints SET status = 'reopened' WHERE status = 'investigating'")
