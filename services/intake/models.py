"""Intake's tables (SQLAlchemy Core). The only place customers' contact data is kept in clear."""
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging import inbox, outbox
from shared.notifications import queue
from shared.persistence import anonymisation, idempotency
from shared.persistence.retention import Purge

metadata = sa.MetaData()
outbox.add_tables(metadata)
queue.add_tables(metadata)
idempotency.add_tables(metadata)
inbox.add_tables(metadata)

complaints = sa.Table(
    "complaints", metadata,
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
    sa.Column("occurred_at", sa.DateTime(timezone=True)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("service", pg.JSONB),
    sa.Column("products", pg.JSONB, nullable=False),
    sa.Column("customer_name", sa.Text),
    sa.Column("customer_phone", sa.Text),
    sa.Column("customer_email", sa.Text),
    sa.Column("customer_language", sa.Text, nullable=False),
    sa.Column("customer_ref", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("first_response_due", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolution_due", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acknowledgement", sa.Text, nullable=False),
    sa.Column("recorded_by", sa.Text, nullable=False),
    sa.Column("recorded_by_role", sa.Text, nullable=False),
    # Events intake published about this complaint (the envelope's sequence), and the last
    # case event its status follows (investigation numbers those).
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("status_sequence", sa.BigInteger, nullable=False, server_default="0"),
    # Retention (migration 0010): when its case closed, a legal hold on the case ({"reason", "by",
    # "at"}) and the last hold event followed, when its personal data was anonymised.
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("legal_hold", pg.JSONB(none_as_null=True)),  # released: SQL NULL, not JSON null
    sa.Column("legal_hold_sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("anonymised_at", sa.DateTime(timezone=True)),
    # An inquiry converted into a complaint (migration 0013): its kind before, when, by whom, why.
    sa.Column("converted_from", sa.Text),
    sa.Column("converted_at", sa.DateTime(timezone=True)),
    sa.Column("converted_by", sa.Text),
    sa.Column("conversion_note", sa.Text),
    sa.Index("ix_complaints_branch_received", "branch_code", sa.text("received_at DESC"), sa.text("id DESC")),
    sa.Index("ix_complaints_received", sa.text("received_at DESC"), sa.text("id DESC")),
    # A customer looked up by phone: their complaints newest first (migration 0012).
    sa.Index("ix_complaints_customer_received", "customer_ref", sa.text("received_at DESC"), sa.text("id DESC")),
    # What retention looks for: closed complaints not anonymised yet, oldest closure first.
    sa.Index("ix_complaints_retention", "closed_at",
             postgresql_where=sa.text("closed_at IS NOT NULL AND anonymised_at IS NULL")),
)

sales = sa.Table(
    "sales", metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("branch_code", sa.Text, nullable=False),
    sa.Column("region", sa.Text, nullable=False),
    sa.Column("sold_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("customer_name", sa.Text),
    sa.Column("customer_phone", sa.Text),
    sa.Column("customer_email", sa.Text),
    sa.Column("customer_language", sa.Text, nullable=False),
    sa.Column("customer_ref", sa.Text),
    sa.Column("contact_consent", sa.Boolean, nullable=False),
    sa.Column("items", pg.JSONB, nullable=False),
    sa.Column("recorded_by", sa.Text, nullable=False),
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    # Adverse-reaction cases after the sale an HQ admin holds: case id -> {"reason", "by", "at", "sequence"}.
    sa.Column("legal_holds", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("anonymised_at", sa.DateTime(timezone=True)),
    sa.Index("ix_sales_branch_sold", "branch_code", "sold_at"),
    sa.Index("ix_sales_customer_sold", "customer_ref", sa.text("sold_at DESC"), sa.text("id DESC")),  # 0012
    sa.Index("ix_sales_retention", "sold_at", postgresql_where=sa.text("anonymised_at IS NULL")),
)

# Each retention run: when, what it anonymised (or would have, dry), what a legal hold kept.
retention_runs = anonymisation.add_tables(metadata)

# Daily sequence per branch for the human reference SH001-20261122-0007.
reference_counters = sa.Table(
    "reference_counters", metadata,
    sa.Column("branch_code", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),
)

# From when a poster or a customer's contact may have its next message (migration 0005).
message_limits = sa.Table(
    "message_limits", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("allowed_from", sa.DateTime(timezone=True), nullable=False),
    prefixes=["UNLOGGED"],
)

# What the retention purge deletes here besides the shared tables (shared.persistence.retention):
# a lapsed limit means the same as none.
PURGES = (Purge("message_limits", "allowed_from", timedelta(0)),)

# Who read a customer's contact in clear, or was refused, when and why. A refused id may
# name no record: then its type and branch are unknown.
contact_access_log = sa.Table(
    "contact_access_log", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("accessed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("record_type", sa.Text),
    sa.Column("record_id", sa.Text, nullable=False),
    sa.Column("branch_code", sa.Text),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),  # granted | refused
    sa.Column("reason", sa.Text),  # why refused: unknown_record, out_of_scope, role, purpose
    sa.Index("ix_contact_access_record", "record_id"),
)
