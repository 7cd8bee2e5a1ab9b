"""Reporting's tables (SQLAlchemy Core): the append-only log of every event it consumed, the
read models built from it, and the shared mechanism's outbox and staff notifications (the
alerts it publishes and sends). No
contact data: the events carry `customer_ref` and masks only."""
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import outbox
from shared.notifications import queue
from shared.persistence import anonymisation

metadata = sa.MetaData()
outbox.add_tables(metadata)
queue.add_tables(metadata)
retention_runs = anonymisation.add_tables(metadata)

TZ = sa.DateTime(timezone=True)
# What a read of the open clocks needs, in the index itself (an index-only scan).
OPEN_CLOCKS = ("category", "first_response_at", "first_response_due", "resolved_at", "resolution_due")

# Every envelope reporting consumed, once (its event id), in the order it was logged: what
# `closeloop projections rebuild` builds the read models from again.
event_log = sa.Table(
    "event_log", metadata,
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
    sa.Column("anonymised_at", TZ),  # its customer's data scrubbed (retention.py)
    sa.Index("ix_event_log_record", "correlation_id"),
    sa.Index("ix_event_log_sales", "occurred_at",
             postgresql_where=sa.text("type = 'sale_recorded' AND anonymised_at IS NULL")),
    sa.Index("ix_event_log_holds", "type",
             postgresql_where=sa.text("type IN ('legal_hold_set', 'legal_hold_released')")),
)

# One row per case (complaint, suggestion, praise, adverse reaction): its facts as folded
# (facts.py), and the columns KPIs filter and group by.
case_facts = sa.Table(
    "case_facts", metadata,
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
    sa.Column("owner", sa.Text),  # the handler (一站式 owner)
    sa.Column("corrective_due", TZ),
    sa.Column("corrective_done_at", TZ),
    sa.Column("corrective_on_time", sa.Boolean),
    sa.Column("decision", sa.Text),  # a suggestion's: adopted | declined
    sa.Column("first_bucket", sa.SmallInteger),       # the first response's duration (kpis.bucket)
    sa.Column("resolution_bucket", sa.SmallInteger),  # the resolution's
    sa.Column("anonymised_at", TZ),  # its customer's data scrubbed (retention.py)
    sa.Column("customer_ref", sa.Text),    # the customer file's key (cleared by retention)
    sa.Column("converted_from", sa.Text),  # 'inquiry': an inquiry converted into this complaint
    sa.Column("facts", pg.JSONB, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Index("ix_case_facts_received", "received_at", "branch_code"),
    sa.Index("ix_case_facts_customer", "customer_ref", "received_at"),  # the customer file
    sa.Index("ix_case_facts_branch", "branch_code", "received_at"),  # one branch's reads
    sa.Index("ix_case_facts_closed", "closed_at", postgresql_where=sa.text("anonymised_at IS NULL")),
    # The complaints with a clock still running: what a read of the KPI cells adds live.
    sa.Index("ix_case_facts_open", "received_at", postgresql_where=sa.text(
        "kind = 'complaint' AND (first_response_at IS NULL OR resolved_at IS NULL)"),
        postgresql_include=list(OPEN_CLOCKS)),
)

# Per case, its remedies as the case's facts hold them, for counts and costs by type and branch.
case_remedies = sa.Table(
    "case_remedies", metadata,
    sa.Column("case_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("remedy_id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(14, 2)),
    sa.Column("status", sa.Text),
    sa.Column("promise", sa.Text),  # kept | broken | None
)

# One row per visit (return visit or satisfaction follow-up), folded from aftercare's events.
visit_facts = sa.Table(
    "visit_facts", metadata,
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
    sa.Column("customer_ref", sa.Text),  # the customer file's key (cleared by retention)
    sa.Column("facts", pg.JSONB, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Index("ix_visit_facts_due", "due_at", "branch_code"),
    sa.Index("ix_visit_facts_branch", "branch_code", "due_at"),
    sa.Index("ix_visit_facts_customer", "customer_ref", "due_at"),  # the customer file
)

# Sales as the customer file shows them (facts.sale), one row per sale: who bought (the ref and
# the mask, both cleared by retention), their consent to contact, the items with their names.
sales = sa.Table(
    "sales", metadata,
    sa.Column("sale_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("sold_at", TZ, nullable=False),
    sa.Column("customer_ref", sa.Text),
    sa.Column("customer_masked", pg.JSONB),
    sa.Column("contact_consent", sa.Boolean),
    sa.Column("items", pg.JSONB, nullable=False),
    sa.Index("ix_sales_customer", "customer_ref", "sold_at"),
)

# Which standard answer each first response, written result and visit used (one row per record
# and purpose), with the satisfaction that followed: the case's follow-up score, the visit's.
answer_uses = sa.Table(
    "answer_uses", metadata,
    sa.Column("record_id", pg.UUID(as_uuid=False), primary_key=True),  # a case's or a visit's id
    sa.Column("purpose", sa.Text, primary_key=True),  # first_response | written_result | visit_follow_up | inquiry
    sa.Column("standard_answer", sa.Text, nullable=False),
    sa.Column("branch_code", sa.Text),
    sa.Column("used_at", TZ, nullable=False),
    sa.Column("score", sa.Integer),
    sa.Index("ix_answer_uses_used", "used_at", "branch_code"),
)

# Sales, one row per item: services sold per branch and technician (complaints per 100 services).
sale_items = sa.Table(
    "sale_items", metadata,
    sa.Column("sale_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("line", sa.Integer, primary_key=True),
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("sold_at", TZ, nullable=False),
    sa.Column("type", sa.Text),
    sa.Column("product_type", sa.Text),
    sa.Column("technician_id", sa.Text),
    sa.Column("batch", sa.Text),
    sa.Index("ix_sale_items_sold", "sold_at", "branch_code"),
    sa.Index("ix_sale_items_branch", "branch_code", "sold_at"),
)

# Adverse reactions return visits found: the product safety signal counts them by batch.
adverse_reactions = sa.Table(
    "adverse_reactions", metadata,
    sa.Column("visit_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("sale_id", pg.UUID(as_uuid=False)),
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("batch", sa.Text),
    sa.Column("sku", sa.Text),
    sa.Column("technician_id", sa.Text),
    sa.Column("reported_at", TZ, nullable=False),
    sa.Index("ix_adverse_reactions_batch", "batch", "reported_at"),
)

# The archive access log (查阅登记), from investigation's archive_accessed.
access_log = sa.Table(
    "access_log", metadata,
    sa.Column("event_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("case_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("branch_code", sa.Text),
    sa.Column("actor", sa.Text),
    sa.Column("actor_role", sa.Text),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("contact_read", sa.Boolean, nullable=False),
    sa.Column("accessed_at", TZ, nullable=False),
    sa.Index("ix_access_log_at", "accessed_at"),
)

# Alerts raised: one per episode of a key (alerts.py); `published` once its event is queued.
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("alert_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),  # recurring_problem | safety_signal
    # What it is about: kind:branch_category:SH001:booking, kind:technician:T-017, kind:batch:B2026-11-03.
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_at", TZ, nullable=False),
    sa.Column("last_at", TZ, nullable=False),
    sa.Column("active_until", TZ, nullable=False),  # last_at + the window: open until then
    sa.Column("records", pg.JSONB, nullable=False),
    sa.Column("branches", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("raised_at", TZ, nullable=False),
    sa.Index("ix_alerts_key", "kind", "key", "last_at"),
    sa.Index("ix_alerts_active", "active_until"),
)

# The KPI cells: the chain's measures (kpis.py) per day, week and month, per category and for
# every case ('*'), kept by each batch that changes them (repository.Rollups, additive) and made
# again from the facts when needed (repository.refresh_rollups).
kpi_values = sa.Table(
    "kpi_values", metadata,
    sa.Column("grain", sa.Text, primary_key=True),      # day | week | month
    sa.Column("period", sa.Date, primary_key=True),     # the day, the week's Monday, the month's first
    sa.Column("category", sa.Text, primary_key=True),   # '*': every case; '': none (and sales, visits)
    sa.Column("measure", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),        # '' for a measure of one number
    sa.Column("value", sa.Numeric, nullable=False),
)

# Whether the cells hold the facts (complete) and in which zone their days are.
kpi_state = sa.Table(
    "kpi_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("zone", sa.Text),
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("made_at", TZ),
    sa.CheckConstraint("id = 1", name="ck_kpi_state_one_row"),
)

PURGES = ()
