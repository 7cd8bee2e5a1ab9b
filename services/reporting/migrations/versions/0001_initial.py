"""Reporting: the event log and the case facts; the outbox and staff notifications (alerts).

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import outbox
from shared.notifications import queue

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    outbox.create_tables_v1(op)
    queue.upgrade_table_v2(op)
    op.execute("CREATE INDEX ix_notifications_done_at ON notifications ((coalesce(sent_at, failed_at)))")
    op.create_table(
        "event_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=False), nullable=False, unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("branch_code", sa.Text),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("sequence", sa.BigInteger),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("logged_at", TZ, nullable=False),
        sa.Column("envelope", pg.JSONB, nullable=False),
    )
    op.create_table(
        "case_facts",
        sa.Column("case_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("branch_code", sa.Text),
        sa.Column("region", sa.Text),
        sa.Column("kind", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("priority", sa.Text),
        sa.Column("channel", sa.Text),
        sa.Column("technician_id", sa.Text),
        sa.Column("state", sa.Text),
        sa.Column("received_at", TZ),
        sa.Column("first_response_at", TZ),
        sa.Column("first_response_due", TZ),
        sa.Column("resolved_at", TZ),
        sa.Column("resolution_due", TZ),
        sa.Column("closed_at", TZ),
        sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reopened", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", sa.Text),
        sa.Column("follow_up_score", sa.Integer),
        sa.Column("facts", pg.JSONB, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_case_facts_received", "case_facts", ["received_at", "branch_code"])


def downgrade():
    for table in ("case_facts", "event_log", "notifications", "outbox"):
        op.drop_table(table)
