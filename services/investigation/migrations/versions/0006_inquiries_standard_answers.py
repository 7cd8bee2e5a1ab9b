"""Investigation: inquiries converted into complaints, and the standard answers' ranking. A case
says whether it was an inquiry converted at intake (converted_from, converted_at); complaints by
category in a period and the caller's branches are counted from one partial index on their receipt
that holds the branch and category too (an index-only scan of the 90 days, whatever the scope).

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("cases", sa.Column("converted_from", sa.Text))
    op.add_column("cases", sa.Column("converted_at", sa.DateTime(timezone=True)))
    op.create_index("ix_cases_complaints_received", "cases", ["received_at"],
                    postgresql_include=["branch_code", "category"], postgresql_where=sa.text("kind = 'complaint'"))


def downgrade():
    op.drop_index("ix_cases_complaints_received", table_name="cases")
    op.drop_column("cases", "converted_at")
    op.drop_column("cases", "converted_from")
