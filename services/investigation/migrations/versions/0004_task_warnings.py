"""Investigation: each waiting task keeps the instant it starts "breaching soon" (its SLA clock's
warning, or a day before a promise's or corrective action's deadline), so the task list can
show and count the breaching-soon and breached tasks of a scope.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("case_tasks", sa.Column("warning_at", sa.DateTime(timezone=True)))
    # The tasks waiting now: the clock's warning when the task is due by its clock, else a day
    # before the deadline (what the code writes from now on).
    op.execute("""
        UPDATE case_tasks t
           SET warning_at = CASE
                 WHEN t.clock IS NOT NULL AND (c.clocks -> t.clock ->> 'due')::timestamptz = t.due
                 THEN (c.clocks -> t.clock ->> 'warning_at')::timestamptz
                 ELSE t.due - interval '24 hours' END
          FROM cases c
         WHERE c.id = t.case_id AND t.due IS NOT NULL""")


def downgrade():
    op.drop_column("case_tasks", "warning_at")
