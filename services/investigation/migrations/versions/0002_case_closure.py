"""Cases to closure: remedies (and the promises among them), the written result, the
follow-up's outcome, the corrective action, a case's origin (an adverse reaction after a
sale), the legal hold and anonymisation after the retention period.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    op.add_column("cases", sa.Column("remedies", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")))
    op.add_column("cases", sa.Column("written_result", pg.JSONB))
    op.add_column("cases", sa.Column("resolved_at", TZ))
    op.add_column("cases", sa.Column("follow_up", pg.JSONB))
    op.add_column("cases", sa.Column("corrective_action", pg.JSONB))
    op.add_column("cases", sa.Column("reopened", sa.Integer, nullable=False, server_default="0"))
    op.add_column("cases", sa.Column("origin", pg.JSONB))
    op.add_column("cases", sa.Column("legal_hold", pg.JSONB))
    op.add_column("cases", sa.Column("anonymised_at", TZ))
    # The approval task waits for whoever may grant the remedy; the follow-up task for aftercare.
    op.add_column("case_tasks", sa.Column("approval", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("case_tasks", sa.Column("system", sa.Boolean, nullable=False, server_default=sa.false()))
    # What retention looks for: closed cases not anonymised yet, oldest closure first.
    op.create_index("ix_cases_retention", "cases", ["closed_at"],
                    postgresql_where=sa.text("closed_at IS NOT NULL AND anonymised_at IS NULL"))


def downgrade():
    op.drop_column("case_tasks", "system")
    op.drop_column("case_tasks", "approval")
    op.drop_index("ix_cases_retention", "cases")
    for column in ("anonymised_at", "legal_hold", "origin", "reopened", "corrective_action", "follow_up",
                   "resolved_at", "written_result", "remedies"):
        op.drop_column("cases", column)
