"""Reporting: the KPI cells (the chain's measures per day, week and month and category, kept as
events come: kpis.py, repository.Rollups) and their state; each case's duration buckets; the
complaints with a clock still running, indexed with what a read of them needs.

The cells are made by the running service (its rollup timer) in the policy's time zone: until
then the KPIs are read from the facts, as before.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# kpis.bucket in SQL: 0 under a minute, then 1 + floor(log base 1.02 of the minutes).
_BUCKET = ("CASE WHEN {end} IS NULL OR received_at IS NULL THEN NULL "
           "WHEN extract(epoch FROM ({end} - received_at)) < 60 THEN 0 "
           "ELSE 1 + floor(ln(extract(epoch FROM ({end} - received_at)) / 60) / ln(1.02))::int END")


def upgrade():
    op.add_column("case_facts", sa.Column("first_bucket", sa.SmallInteger))
    op.add_column("case_facts", sa.Column("resolution_bucket", sa.SmallInteger))
    op.execute(f"UPDATE case_facts SET first_bucket = {_BUCKET.format(end='first_response_at')}, "
               f"resolution_bucket = {_BUCKET.format(end='resolved_at')} "
               f"WHERE first_response_at IS NOT NULL OR resolved_at IS NOT NULL")
    op.create_index("ix_case_facts_open", "case_facts", ["received_at"],
                    postgresql_where=sa.text("kind = 'complaint' AND (first_response_at IS NULL OR resolved_at IS NULL)"),
                    postgresql_include=["category", "first_response_at", "first_response_due", "resolved_at",
                                        "resolution_due"])
    op.create_table(
        "kpi_values",
        sa.Column("grain", sa.Text, primary_key=True),      # day | week | month
        sa.Column("period", sa.Date, primary_key=True),     # the day, the week's Monday, the month's first
        sa.Column("category", sa.Text, primary_key=True),   # '*': every case; '': none (and sales, visits)
        sa.Column("measure", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),        # '' for a measure of one number
        sa.Column("value", sa.Numeric, nullable=False),
    )
    # Room on each page for a cell's next value (a HOT update: its index entries stay as they are).
    op.execute("ALTER TABLE kpi_values SET (fillfactor = 70)")
    op.create_table(
        "kpi_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("zone", sa.Text),                         # the cells' days are this zone's
        sa.Column("complete", sa.Boolean, nullable=False),  # false: to be made (again) from the facts
        sa.Column("made_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("id = 1", name="ck_kpi_state_one_row"),
    )
    op.execute("INSERT INTO kpi_state (id, zone, complete) VALUES (1, NULL, false)")


def downgrade():
    op.drop_table("kpi_state")
    op.drop_table("kpi_values")
    op.drop_index("ix_case_facts_open", "case_facts")
    op.drop_column("case_facts", "resolution_bucket")
    op.drop_column("case_facts", "first_bucket")
