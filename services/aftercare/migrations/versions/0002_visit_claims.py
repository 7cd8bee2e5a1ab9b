"""An agent's claim on a visit: who works it now (`claimed_by`, the staff subject of the token)
and until when (`claimed_until`). A claim runs out on its own; the agent's attempt ends it.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    op.add_column("visits", sa.Column("claimed_by", sa.Text))
    op.add_column("visits", sa.Column("claimed_until", TZ))


def downgrade():
    op.drop_column("visits", "claimed_until")
    op.drop_column("visits", "claimed_by")
