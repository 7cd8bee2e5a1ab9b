"""Investigation's tables (SQLAlchemy Core): cases, the tasks they wait on, their timelines,
and the shared mechanism's tables (outbox, inbox, staff notifications, the workflow engine's
definitions and instances). No customer contact: cases hold customer_ref and masked names."""
from datetime import datetime, timezone

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
# Where the task list sorts a task without a deadline (last). The list's indexes below sort by
# the same `coalesce(due, NO_DEADLINE)` as the repository's query, or the planner cannot use them.
NO_DEADLINE = datetime(9999, 12, 31, tzinfo=timezone.utc)
_DUE_KEY = sa.text(f"coalesce(due, '{NO_DEADLINE:%Y-%m-%d %H:%M:%S}+00'::timestamptz)")
NULLABLE_JSON = pg.JSONB(none_as_null=True)  # None is SQL NULL (`IS NULL` finds it), not JSON null

# One row per case; the process instance of the same id holds where its process stands, and
# its row lock is the case's lock (see repository.Cases.get).
cases = sa.Table(
    "cases", metadata,
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
    sa.Column("service", NULLABLE_JSON),
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
    # The earliest deadline of a running clock; NULL while waiting for the customer or when
    # none runs. `overdue=true` reads it.
    sa.Column("next_due", TZ),
    sa.Column("paused_since", TZ),
    sa.Column("pause_reason", sa.Text),
    sa.Column("first_response", NULLABLE_JSON),
    sa.Column("findings", NULLABLE_JSON),
    sa.Column("decision", NULLABLE_JSON),
    sa.Column("outcome", sa.Text),
    sa.Column("closed_at", TZ),
    # Issue 9: what the customer is given (each remedy, a promise among them), what they were
    # told (the written result), the follow-up's outcome, the corrective action when the
    # fault was ours; a case opened by an adverse reaction names the sale, technician and batch.
    sa.Column("remedies", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("written_result", NULLABLE_JSON),
    sa.Column("resolved_at", TZ),
    sa.Column("follow_up", NULLABLE_JSON),
    sa.Column("corrective_action", NULLABLE_JSON),
    sa.Column("reopened", sa.Integer, nullable=False, server_default="0"),
    sa.Column("origin", NULLABLE_JSON),
    # Retention: a legal hold (set by an HQ admin) keeps the record; anonymised_at says when its
    # personal data went.
    sa.Column("legal_hold", NULLABLE_JSON),
    sa.Column("anonymised_at", TZ),
    # Issue 13: an inquiry converted into a complaint (migration 0006): what it was, and when.
    sa.Column("converted_from", sa.Text),
    sa.Column("converted_at", TZ),
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Index("ix_cases_branch_opened", "branch_code", sa.text("opened_at DESC"), sa.text("id DESC")),
    sa.Index("ix_cases_opened", sa.text("opened_at DESC"), sa.text("id DESC")),
    sa.Index("ix_cases_owner", "owner"),
    sa.Index("ix_cases_next_due", "next_due", postgresql_where=sa.text("next_due IS NOT NULL")),
    sa.Index("ix_cases_retention", "closed_at",
             postgresql_where=sa.text("closed_at IS NOT NULL AND anonymised_at IS NULL")),
    # A staff notice names its case by the id as text (notifications.subject_id): the notices'
    # list finds each one's case by it (migration 0005).
    sa.Index("ix_cases_id_text", sa.text("(id::text)")),
    # The standard answers' ranking: complaints by category received in the last 90 days, in the
    # caller's branches; read from the index alone (migration 0006).
    sa.Index("ix_cases_complaints_received", "received_at", postgresql_include=["branch_code", "category"],
             postgresql_where=sa.text("kind = 'complaint'")),
)

# The tasks each case's process waits on now, as the API shows them: replaced after every step.
case_tasks = sa.Table(
    "case_tasks", metadata,
    sa.Column("case_id", pg.UUID(as_uuid=False), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("task", sa.Text, primary_key=True),
    sa.Column("title", sa.Text),
    sa.Column("roles", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("owner_may_complete", sa.Boolean, nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("clock", sa.Text),
    sa.Column("approval", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("system", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("due", TZ),
    sa.Column("warning_at", TZ),  # from here the task is "breaching soon" (its clock's warning)
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("waiting_since", TZ, nullable=False),
    sa.Index("ix_case_tasks_roles", "roles", postgresql_using="gin"),
    sa.Index("ix_case_tasks_owner", "owner", postgresql_where=sa.text("owner IS NOT NULL")),
    # The task list's order (soonest due, no deadline last, then case and task), in a branch and
    # across every branch (migration 0005): a page reads its rows in order and stops.
    sa.Index("ix_case_tasks_branch_due", "branch_code", _DUE_KEY, "case_id", "task"),
    sa.Index("ix_case_tasks_due", _DUE_KEY, "case_id", "task"),
)

# The staff notices a role reads (GET /v1/notifications), newest first (migration 0005). Not
# partial (`WHERE audience = 'staff'`): every notice here is a staff notice (intake queues the
# customers' messages), and Postgres keeps no statistics for a partial index's expression, so it
# would guess how many notices a role has and, guessing few, join them all to their cases.
_notifications = metadata.tables["notifications"]
sa.Index("ix_notifications_role", sa.text("split_part(recipient, ';', 1)"), _notifications.c.id)

# Every step of every case: who, in which role, when, what.
case_timeline = sa.Table(
    "case_timeline", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("case_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("at", TZ, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("role", sa.Text),
    sa.Column("what", sa.Text, nullable=False),
    sa.Column("detail", pg.JSONB, nullable=False),
    sa.Index("ix_case_timeline_case", "case_id", "id"),
)

PURGES = ()  # nothing of its own to purge yet (closed cases are kept: retention comes with the archive)

# Each retention run (migration 0003): when, what it anonymised (or would have, dry), what a legal
# hold kept; the ids it touched in retention_run_records.
from shared.persistence import anonymisation  # noqa: E402 - with the tables it adds

retention_runs = anonymisation.add_tables(metadata)
