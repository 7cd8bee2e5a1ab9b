"""Aftercare's tables (SQLAlchemy Core): visits, and the shared mechanism's tables (outbox,
inbox, staff notifications, the workflow engine's). No customer contact: visits hold
customer_ref and masked names; the agent reads the contact from intake."""
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import inbox, outbox
from shared.notifications import queue
from shared.workflow import add_tables as add_workflow_tables

metadata = sa.MetaData()
outbox.add_tables(metadata)
queue.add_tables(metadata)
inbox.add_tables(metadata)
add_workflow_tables(metadata)

TZ = sa.DateTime(timezone=True)
OPEN_STATUSES = ("scheduled", "in_progress")

# One row per visit: a return visit after a sale (one per day its items fall due) or a
# satisfaction follow-up after a resolved case. Its id comes from what planned it.
visits = sa.Table(
    "visits", metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("due_at", TZ, nullable=False),
    sa.Column("sale_id", pg.UUID(as_uuid=False)),
    sa.Column("case_id", pg.UUID(as_uuid=False)),
    sa.Column("customer_ref", sa.Text),
    sa.Column("customer_masked", pg.JSONB, nullable=False),
    sa.Column("items", pg.JSONB, nullable=False),
    sa.Column("allergy_check", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("outcome", pg.JSONB(none_as_null=True)),
    sa.Column("planned_by", sa.Text, nullable=False),  # the event that planned it
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    # The agent's queue: a branch's open visits, allergy checks first, soonest due first.
    sa.Index("ix_visits_queue", "branch_code", sa.text("allergy_check DESC"), "due_at", "id",
             postgresql_where=sa.text("status IN ('scheduled', 'in_progress')")),
    sa.Index("ix_visits_case", "case_id", postgresql_where=sa.text("case_id IS NOT NULL")),
    sa.Index("ix_visits_sale", "sale_id", postgresql_where=sa.text("sale_id IS NOT NULL")),
)

PURGES = ()
