"""Aftercare: visits, legal holds, the retention runs' log; outbox, inbox, staff notifications and
the workflow engine's tables.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared import workflow
from shared.messaging import inbox, outbox
from shared.notifications import queue
from shared.persistence import anonymisation

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    outbox.create_tables_v1(op)
    queue.upgrade_table_v2(op)
    op.execute("CREATE INDEX ix_notifications_done_at ON notifications ((coalesce(sent_at, failed_at)))")
    inbox.create_tables_v1(op)
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])
    workflow.create_tables_v1(op)
    workflow.upgrade_tables_v2(op)
    op.create_table(
        "visits",
        sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("due_at", TZ, nullable=False),
        sa.Column("call_at", TZ, nullable=False),
        sa.Column("abandon_at", TZ, nullable=False),
        sa.Column("sale_id", pg.UUID(as_uuid=False)),
        sa.Column("case_id", pg.UUID(as_uuid=False)),
        sa.Column("record_type", sa.Text, nullable=False),
        sa.Column("record_id", pg.UUID(as_uuid=False), nullable=False),
        sa.Column("customer_ref", sa.Text),
        sa.Column("customer_masked", pg.JSONB, nullable=False),
        sa.Column("customer_language", sa.Text, nullable=False),
        sa.Column("items", pg.JSONB, nullable=False),
        sa.Column("follows", pg.JSONB, nullable=False),
        sa.Column("allergy_check", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", pg.JSONB, nullable=False),
        sa.Column("message", pg.JSONB),
        sa.Column("outcome", pg.JSONB),
        sa.Column("planned_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("anonymised_at", TZ),
        sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    )
    open_ = sa.text("status IN ('scheduled', 'in_progress')")
    op.create_index("ix_visits_queue", "visits", ["branch_code", sa.text("allergy_check DESC"), "call_at", "id"],
                    postgresql_where=open_)
    op.create_index("ix_visits_queue_all", "visits", [sa.text("allergy_check DESC"), "call_at", "id"],
                    postgresql_where=open_)
    op.create_index("ix_visits_status", "visits", ["branch_code", "status", "call_at", "id"])
    op.create_index("ix_visits_case", "visits", ["case_id"], postgresql_where=sa.text("case_id IS NOT NULL"))
    op.create_index("ix_visits_sale", "visits", ["sale_id"], postgresql_where=sa.text("sale_id IS NOT NULL"))
    op.create_index("ix_visits_finished", "visits", ["finished_at"], postgresql_where=sa.text("anonymised_at IS NULL"))
    anonymisation.create_tables_v1(op)
    op.create_table(
        "cancelled_follow_ups",
        sa.Column("visit_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("case_id", pg.UUID(as_uuid=False), nullable=False),
        sa.Column("cancelled_at", TZ, nullable=False),
    )
    op.create_table(
        "legal_holds",
        sa.Column("subject", sa.Text, primary_key=True),
        sa.Column("held", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("set_at", TZ, nullable=False),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
    )


def downgrade():
    for table in ("legal_holds", "cancelled_follow_ups", "retention_run_records", "retention_runs", "visits", "process_instances", "process_definitions", "inbox", "notifications", "outbox"):
        op.drop_table(table)
