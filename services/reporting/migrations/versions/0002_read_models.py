"""Reporting: visits, sales, adverse reactions, the archive access log, remedies and alerts;
the case facts' owner, corrective action and decision columns; the retention of personal data
(what was anonymised when, the run log).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared.persistence import anonymisation

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
TABLES = ("case_remedies", "visit_facts", "sale_items", "adverse_reactions", "access_log", "alerts")


def upgrade():
    anonymisation.create_tables_v1(op)
    for name, kind in (("owner", sa.Text), ("corrective_due", TZ), ("corrective_done_at", TZ),
                       ("corrective_on_time", sa.Boolean), ("decision", sa.Text), ("anonymised_at", TZ)):
        op.add_column("case_facts", sa.Column(name, kind))
    op.add_column("event_log", sa.Column("anonymised_at", TZ))
    op.create_index("ix_event_log_record", "event_log", ["correlation_id"])
    op.create_index("ix_event_log_sales", "event_log", ["occurred_at"],
                    postgresql_where=sa.text("type = 'sale_recorded' AND anonymised_at IS NULL"))
    op.create_index("ix_event_log_holds", "event_log", ["type"],
                    postgresql_where=sa.text("type IN ('legal_hold_set', 'legal_hold_released')"))
    op.create_index("ix_case_facts_closed", "case_facts", ["closed_at"],
                    postgresql_where=sa.text("anonymised_at IS NULL"))
    op.create_table(
        "case_remedies",
        sa.Column("case_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("remedy_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("amount", sa.Numeric(14, 2)),
        sa.Column("status", sa.Text),
        sa.Column("promise", sa.Text),
    )
    op.create_table(
        "visit_facts",
        sa.Column("visit_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("branch_code", sa.Text),
        sa.Column("kind", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("due_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reached", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("score", sa.Integer),
        sa.Column("suggestions", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("adverse_reaction", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("facts", pg.JSONB, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "sale_items",
        sa.Column("sale_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("sold_at", TZ, nullable=False),
        sa.Column("type", sa.Text),
        sa.Column("product_type", sa.Text),
        sa.Column("technician_id", sa.Text),
        sa.Column("batch", sa.Text),
    )
    op.create_table(
        "adverse_reactions",
        sa.Column("visit_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("sale_id", pg.UUID(as_uuid=False)),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("batch", sa.Text),
        sa.Column("sku", sa.Text),
        sa.Column("technician_id", sa.Text),
        sa.Column("reported_at", TZ, nullable=False),
    )
    op.create_table(
        "access_log",
        sa.Column("event_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("case_id", pg.UUID(as_uuid=False), nullable=False),
        sa.Column("branch_code", sa.Text),
        sa.Column("actor", sa.Text),
        sa.Column("actor_role", sa.Text),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("contact_read", sa.Boolean, nullable=False),
        sa.Column("accessed_at", TZ, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("alert_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_at", TZ, nullable=False),
        sa.Column("last_at", TZ, nullable=False),
        sa.Column("active_until", TZ, nullable=False),
        sa.Column("records", pg.JSONB, nullable=False),
        sa.Column("branches", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("raised_at", TZ, nullable=False),
    )
    op.create_index("ix_visit_facts_due", "visit_facts", ["due_at", "branch_code"])
    op.create_index("ix_visit_facts_branch", "visit_facts", ["branch_code", "due_at"])
    op.create_index("ix_sale_items_branch", "sale_items", ["branch_code", "sold_at"])
    op.create_index("ix_case_facts_branch", "case_facts", ["branch_code", "received_at"])
    op.create_index("ix_sale_items_sold", "sale_items", ["sold_at", "branch_code"])
    op.create_index("ix_adverse_reactions_batch", "adverse_reactions", ["batch", "reported_at"])
    op.create_index("ix_access_log_at", "access_log", ["accessed_at"])
    op.create_index("ix_alerts_key", "alerts", ["kind", "key", "last_at"])
    op.create_index("ix_alerts_active", "alerts", ["active_until"])


def downgrade():
    op.drop_table("retention_run_records")
    op.drop_table("retention_runs")
    for name in reversed(TABLES):
        op.drop_table(name)
    op.drop_index("ix_case_facts_closed", "case_facts")
    op.drop_index("ix_case_facts_branch", "case_facts")
    for name in ("owner", "corrective_due", "corrective_done_at", "corrective_on_time", "decision", "anonymised_at"):
        op.drop_column("case_facts", name)
    for name in ("ix_event_log_holds", "ix_event_log_sales", "ix_event_log_record"):
        op.drop_index(name, "event_log")
    op.drop_column("event_log", "anonymised_at")
