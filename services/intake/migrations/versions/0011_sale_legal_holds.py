"""A sale's legal holds: the cases opened by adverse reactions after it that an HQ admin holds
(case id -> the hold); a sale held by any is kept past the retention.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("sales", sa.Column("legal_holds", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")))


def downgrade():
    op.drop_column("sales", "legal_holds")
