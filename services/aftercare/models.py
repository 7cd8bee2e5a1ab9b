"""Aftercare's tables (SQLAlchemy Core): visits, and the shared mechanism's tables (outbox,
inbox, staff notifications, the workflow engine's). No customer contact: visits hold
customer_ref and masked names; the agent reads the contact from intake."""
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import inbox, outbox
from shared.notifications import queue
from shared.persistence import anonymisation
from shared.workflow import add_tables as add_workflow_tables

metadata = sa.MetaData()
outbox.add_tables(metadata)
queue.add_tables(metadata)
inbox.add_tables(metadata)
add_workflow_tables(metadata)
retention_runs = anonymisation.add_tables(metadata)

TZ = sa.DateTime(timezone=True)
OPEN_STATUSES = ("scheduled", "in_progress")

# One row per visit: a return visit after a sale (one per day its items fall due) or a
# satisfaction follow-up after a resolved case. Its id comes from what planned it. `due_at` is
# when it was planned for; `call_at` when it is next called (the agent's queue runs on it).
visits = sa.Table(
    "visits", metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("due_at", TZ, nullable=False),
    sa.Column("call_at", TZ, nullable=False),
    sa.Column("abandon_at", TZ, nullable=False),
    sa.Column("sale_id", pg.UUID(as_uuid=False)),
    sa.Column("case_id", pg.UUID(as_uuid=False)),
    sa.Column("record_type", sa.Text, nullable=False),  # whose customer intake contacts
    sa.Column("record_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("customer_ref", sa.Text),
    sa.Column("customer_masked", pg.JSONB, nullable=False),
    sa.Column("customer_language", sa.Text, nullable=False),
    sa.Column("items", pg.JSONB, nullable=False),
    sa.Column("follows", pg.JSONB, nullable=False),
    sa.Column("allergy_check", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", pg.JSONB, nullable=False),
    sa.Column("message", pg.JSONB(none_as_null=True)),
    sa.Column("outcome", pg.JSONB(none_as_null=True)),
    sa.Column("planned_by", sa.Text, nullable=False),  # the event that planned it
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Column("finished_at", TZ),
    sa.Column("anonymised_at", TZ),
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    # An agent's claim (domain.Claim): the staff subject working the visit now, until when. Set and
    # ended by conditional updates (repository.Visits.claim), so two agents never both win it.
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", TZ),
    # The agent's queue: a branch's open visits, allergy checks first, soonest call first; and
    # the same over every branch (an HQ call centre).
    sa.Index("ix_visits_queue", "branch_code", sa.text("allergy_check DESC"), "call_at", "id",
             postgresql_where=sa.text("status IN ('scheduled', 'in_progress')")),
    sa.Index("ix_visits_queue_all", sa.text("allergy_check DESC"), "call_at", "id",
             postgresql_where=sa.text("status IN ('scheduled', 'in_progress')")),
    sa.Index("ix_visits_status", "branch_code", "status", "call_at", "id"),
    sa.Index("ix_visits_case", "case_id", postgresql_where=sa.text("case_id IS NOT NULL")),
    sa.Index("ix_visits_sale", "sale_id", postgresql_where=sa.text("sale_id IS NOT NULL")),
    sa.Index("ix_visits_finished", "finished_at", postgresql_where=sa.text("anonymised_at IS NULL")),
)

# Investigation's legal holds on cases (and on the sale an adverse reaction's case follows):
# the visits they cover keep their personal data past the retention. `subject`: case:<id> or sale:<id>.
legal_holds = sa.Table(
    "legal_holds", metadata,
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("held", sa.Boolean, nullable=False),  # false: released (kept, so an older "set" heard late loses)
    sa.Column("reason", sa.Text),
    sa.Column("set_at", TZ, nullable=False),
    sa.Column("last_sequence", sa.BigInteger, nullable=False),  # the hold event's per-case sequence
)

# The follow-ups a reopened case no longer wants, by id: a case_resolved heard after the
# case_reopened that followed it (a retried delivery) plans nothing.
cancelled_follow_ups = sa.Table(
    "cancelled_follow_ups", metadata,
    sa.Column("visit_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("case_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("cancelled_at", TZ, nullable=False),
)

PURGES = ()
