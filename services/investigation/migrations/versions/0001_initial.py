"""Investigation: cases, their waiting tasks and timelines; outbox, inbox, staff notifications
and the workflow engine's tables.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import inbox, outbox
from shared.notifications import queue
from shared import workflow

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    outbox.create_tables_v1(op)  # with the notification table, version 1
    queue.upgrade_table_v2(op)
    op.execute("CREATE INDEX ix_notifications_done_at ON notifications ((coalesce(sent_at, failed_at)))")
    inbox.create_tables_v1(op)
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])
    workflow.create_tables_v1(op)
    workflow.upgrade_tables_v2(op)
    op.create_table(
        "cases",
        sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("complaint_id", pg.UUID(as_uuid=False)),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("priority", sa.Text, nullable=False),
        sa.Column("severity_flags", pg.JSONB, nullable=False),
        sa.Column("channel", sa.Text),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("service", pg.JSONB),
        sa.Column("products", pg.JSONB, nullable=False),
        sa.Column("customer_ref", sa.Text),
        sa.Column("customer_masked", pg.JSONB, nullable=False),
        sa.Column("customer_language", sa.Text, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("opened_at", TZ, nullable=False),
        sa.Column("process", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
        sa.Column("clocks", pg.JSONB, nullable=False),
        sa.Column("next_due", TZ),
        sa.Column("paused_since", TZ),
        sa.Column("pause_reason", sa.Text),
        sa.Column("first_response", pg.JSONB),
        sa.Column("findings", pg.JSONB),
        sa.Column("decision", pg.JSONB),
        sa.Column("outcome", sa.Text),
        sa.Column("closed_at", TZ),
        sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_cases_branch_opened", "cases", ["branch_code", sa.text("opened_at DESC"), sa.text("id DESC")])
    op.create_index("ix_cases_opened", "cases", [sa.text("opened_at DESC"), sa.text("id DESC")])
    op.create_index("ix_cases_owner", "cases", ["owner"])
    op.create_index("ix_cases_next_due", "cases", ["next_due"], postgresql_where=sa.text("next_due IS NOT NULL"))
    op.create_table(
        "case_tasks",
        sa.Column("case_id", pg.UUID(as_uuid=False), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("roles", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("owner_may_complete", sa.Boolean, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("clock", sa.Text),
        sa.Column("due", TZ),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("waiting_since", TZ, nullable=False),
    )
    op.create_index("ix_case_tasks_roles", "case_tasks", ["roles"], postgresql_using="gin")
    op.create_index("ix_case_tasks_owner", "case_tasks", ["owner"], postgresql_where=sa.text("owner IS NOT NULL"))
    op.create_table(
        "case_timeline",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("case_id", pg.UUID(as_uuid=False), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("role", sa.Text),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("detail", pg.JSONB, nullable=False),
    )
    op.create_index("ix_case_timeline_case", "case_timeline", ["case_id", "id"])


def downgrade():
    for table in ("case_timeline", "case_tasks", "cases", "process_instances", "process_definitions", "inbox",
                  "notifications", "outbox"):
        op.drop_table(table)
