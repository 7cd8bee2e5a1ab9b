"""Intake: complaints, sales, references, contact-access log, outbox, idempotency keys.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared.persistence import idempotency
from shared.messaging import outbox

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _customer_columns():
    return [sa.Column("customer_name", sa.Text), sa.Column("customer_phone", sa.Text),
            sa.Column("customer_email", sa.Text), sa.Column("customer_language", sa.Text, nullable=False),
            sa.Column("customer_ref", sa.Text)]


def upgrade():
    outbox.create_tables_v1(op)
    idempotency.create_tables_v1(op)
    op.create_table(
        "complaints",
        sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("reference", sa.Text, nullable=False, unique=True),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("category_source", sa.Text, nullable=False),
        sa.Column("priority", sa.Text, nullable=False),
        sa.Column("severity_flags", pg.JSONB, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("occurred_at", TZ),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("service", pg.JSONB),
        sa.Column("products", pg.JSONB, nullable=False),
        *_customer_columns(),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("first_response_due", TZ, nullable=False),
        sa.Column("resolution_due", TZ, nullable=False),
        sa.Column("acknowledgement", sa.Text, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("recorded_by_role", sa.Text, nullable=False),
    )
    op.create_index("ix_complaints_branch_received", "complaints",
                    ["branch_code", sa.text("received_at DESC"), sa.text("id DESC")])
    op.create_index("ix_complaints_received", "complaints", [sa.text("received_at DESC"), sa.text("id DESC")])
    op.create_index("ix_complaints_customer_ref", "complaints", ["customer_ref"])
    op.create_table(
        "sales",
        sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("sold_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        *_customer_columns(),
        sa.Column("contact_consent", sa.Boolean, nullable=False),
        sa.Column("items", pg.JSONB, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
    )
    op.create_index("ix_sales_branch_sold", "sales", ["branch_code", "sold_at"])
    op.create_table(
        "reference_counters",
        sa.Column("branch_code", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("last", sa.Integer, nullable=False),
    )
    op.create_table(
        "contact_access_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("accessed_at", TZ, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("record_type", sa.Text, nullable=False),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
    )
    op.create_index("ix_contact_access_record", "contact_access_log", ["record_id"])


def downgrade():
    for table in ("contact_access_log", "reference_counters", "sales", "complaints",
                  "idempotency_keys", "notifications", "outbox"):
        op.drop_table(table)
