"""Intake: retention of personal data. A complaint keeps when its case closed (the retention
counts from it), the legal hold an HQ admin set on its case, and when its personal data was
anonymised; a sale, when it was anonymised. The log of retention runs.

A complaint already closed has no time of closure: it takes this migration's, so that its
personal data is kept the whole retention from now on rather than anonymised too early.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared.persistence import anonymisation

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    op.add_column("complaints", sa.Column("closed_at", TZ))
    op.add_column("complaints", sa.Column("legal_hold", pg.JSONB))
    op.add_column("complaints", sa.Column("legal_hold_sequence", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("complaints", sa.Column("anonymised_at", TZ))
    op.add_column("sales", sa.Column("anonymised_at", TZ))
    op.execute("UPDATE complaints SET closed_at = now() WHERE status = 'closed'")
    anonymisation.create_tables_v1(op)
    # Built without blocking writes to big tables (as 0006).
    with op.get_context().autocommit_block():
        op.create_index("ix_complaints_retention", "complaints", ["closed_at"], postgresql_concurrently=True,
                        postgresql_where=sa.text("closed_at IS NOT NULL AND anonymised_at IS NULL"),
                        if_not_exists=True)
        op.create_index("ix_sales_retention", "sales", ["sold_at"], postgresql_concurrently=True,
                        postgresql_where=sa.text("anonymised_at IS NULL"), if_not_exists=True)


def downgrade():
    op.drop_index("ix_sales_retention", table_name="sales")
    op.drop_index("ix_complaints_retention", table_name="complaints")
    op.drop_table("retention_run_records")
    op.drop_table("retention_runs")
    op.drop_column("sales", "anonymised_at")
    for column in ("anonymised_at", "legal_hold_sequence", "legal_hold", "closed_at"):
        op.drop_column("complaints", column)
