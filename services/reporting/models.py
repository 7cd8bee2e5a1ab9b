"""Reporting's tables (SQLAlchemy Core): the append-only log of every event it consumed, the
read models built from it, and the shared mechanism's outbox and staff notifications (the
alerts it publishes and sends). No
contact data: the events carry `customer_ref` and masks only."""
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import outbox
from shared.notifications import queue

metadata = sa.MetaData()
outbox.add_tables(metadata)
queue.add_tables(metadata)

TZ = sa.DateTime(timezone=True)

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
    sa.Column("facts", pg.JSONB, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Index("ix_case_facts_received", "received_at", "branch_code"),
)

PURGES = ()
