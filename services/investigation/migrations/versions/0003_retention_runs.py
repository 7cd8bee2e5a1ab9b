"""Investigation: the log of retention runs (when, what each anonymised or, dry, would have, what
a legal hold kept) and the ids each touched. The cases' own retention columns came with 0002.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

from shared.persistence import anonymisation

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    anonymisation.create_tables_v1(op)


def downgrade():
    op.drop_table("retention_run_records")
    op.drop_table("retention_runs")
