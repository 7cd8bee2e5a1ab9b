"""Reporting: the customer file (GET /v1/customers/{customer_ref}) and the standard answers used.

The case and visit facts get an indexed `customer_ref` (the case facts also `converted_from`: an
inquiry converted into a complaint); sales are kept one row a sale with the customer's ref and
mask, their consent and the items (`sales`); `answer_uses` holds which standard answer each
first response, written result and visit used. Existing rows are filled from what reporting
already holds: the case facts' JSON, the logged envelopes (visits' refs and answers, sales) -
except what retention anonymised. No standard answer was recorded before this revision.

The case library's texts (a case's scrubbed description, findings, measures, corrective action)
are folded from the events from now on; `closeloop projections rebuild` folds them for the cases
already held.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    op.add_column("case_facts", sa.Column("customer_ref", sa.Text))
    op.add_column("case_facts", sa.Column("converted_from", sa.Text))
    op.execute("UPDATE case_facts SET customer_ref = facts->>'customer_ref' "
               "WHERE facts->>'customer_ref' IS NOT NULL AND anonymised_at IS NULL")
    op.create_index("ix_case_facts_customer", "case_facts", ["customer_ref", "received_at"])

    op.add_column("visit_facts", sa.Column("customer_ref", sa.Text))
    # A visit's ref and its answers, from its newest logged event that has them (an anonymised
    # event's ref is gone: so is the visit's).
    op.execute("""
        UPDATE visit_facts v SET customer_ref = e.ref, facts = v.facts || jsonb_build_object('customer_ref', e.ref)
        FROM (SELECT DISTINCT ON (envelope->'payload'->>'visit_id') envelope->'payload'->>'visit_id' AS visit_id,
                     envelope->'payload'->>'customer_ref' AS ref
              FROM event_log WHERE source = 'aftercare' AND envelope->'payload'->>'visit_id' IS NOT NULL
                AND envelope->'payload'->>'customer_ref' IS NOT NULL AND anonymised_at IS NULL
              ORDER BY 1, id DESC) AS e
        WHERE v.visit_id::text = e.visit_id""")
    op.execute("""
        UPDATE visit_facts v SET facts = v.facts || jsonb_build_object('answers', e.answers)
        FROM (SELECT DISTINCT ON (envelope->'payload'->>'visit_id') envelope->'payload'->>'visit_id' AS visit_id,
                     envelope->'payload'->'answers' AS answers
              FROM event_log WHERE source = 'aftercare' AND type = 'visit_completed'
              ORDER BY 1, occurred_at DESC, id DESC) AS e
        WHERE v.visit_id::text = e.visit_id""")
    op.create_index("ix_visit_facts_customer", "visit_facts", ["customer_ref", "due_at"])

    op.create_table(
        "sales",
        sa.Column("sale_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("branch_code", sa.Text, nullable=False),
        sa.Column("sold_at", TZ, nullable=False),
        sa.Column("customer_ref", sa.Text),
        sa.Column("customer_masked", pg.JSONB),
        sa.Column("contact_consent", sa.Boolean),
        sa.Column("items", pg.JSONB, nullable=False),
    )
    # Each sale once (its first logged event, as the fold keeps it), items as facts.sale keeps them.
    op.execute("""
        INSERT INTO sales (sale_id, branch_code, sold_at, customer_ref, customer_masked, contact_consent, items)
        SELECT DISTINCT ON (p->>'sale_id') (p->>'sale_id')::uuid, branch_code, (p->>'sold_at')::timestamptz,
               p->>'customer_ref',
               jsonb_build_object('name', p->'customer_masked'->'name', 'phone', p->'customer_masked'->'phone'),
               (p->>'contact_consent')::boolean,
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'type', i->'type', 'sku', i->'sku', 'code', i->'code', 'name', i->'name',
                            'product_type', i->'product_type', 'batch', i->'batch',
                            'technician_id', i->'technician_id') ORDER BY n)
                         FROM jsonb_array_elements(p->'items') WITH ORDINALITY AS x(i, n)), '[]'::jsonb)
        FROM (SELECT id, branch_code, envelope->'payload' AS p FROM event_log
              WHERE type = 'sale_recorded' AND source = 'intake') AS logged
        WHERE branch_code IS NOT NULL AND p->>'sale_id' IS NOT NULL AND p->>'sold_at' IS NOT NULL
        ORDER BY p->>'sale_id', id""")
    op.create_index("ix_sales_customer", "sales", ["customer_ref", "sold_at"])

    op.create_table(
        "answer_uses",
        sa.Column("record_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("purpose", sa.Text, primary_key=True),
        sa.Column("standard_answer", sa.Text, nullable=False),
        sa.Column("branch_code", sa.Text),
        sa.Column("used_at", TZ, nullable=False),
        sa.Column("score", sa.Integer),
    )
    op.create_index("ix_answer_uses_used", "answer_uses", ["used_at", "branch_code"])


def downgrade():
    op.drop_table("answer_uses")
    op.drop_table("sales")
    op.drop_index("ix_visit_facts_customer", "visit_facts")
    op.drop_column("visit_facts", "customer_ref")
    op.drop_index("ix_case_facts_customer", "case_facts")
    op.drop_column("case_facts", "converted_from")
    op.drop_column("case_facts", "customer_ref")
