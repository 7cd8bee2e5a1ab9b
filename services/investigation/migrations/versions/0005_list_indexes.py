"""Investigation: indexes for the task list and the staff notices. The task list reads its rows in
its own order (soonest due, no deadline last, then case and task), in one branch or in every
branch, instead of sorting every task in scope; a role's staff notices are found newest first,
and each one's case by the case id as text (the notice's subject_id).

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The repository's NO_DEADLINE (models.NO_DEADLINE), as the list's query sorts by it.
DUE_KEY = "coalesce(due, '9999-12-31 00:00:00+00'::timestamptz)"


def upgrade():
    op.execute(f"CREATE INDEX ix_case_tasks_branch_due ON case_tasks (branch_code, {DUE_KEY}, case_id, task)")
    op.execute(f"CREATE INDEX ix_case_tasks_due ON case_tasks ({DUE_KEY}, case_id, task)")
    # Not partial: Postgres keeps statistics for an index's expression only when it is not (see models).
    op.execute("CREATE INDEX ix_notifications_role ON notifications (split_part(recipient, ';', 1), id)")
    op.execute("CREATE INDEX ix_cases_id_text ON cases ((id::text))")


def downgrade():
    op.drop_index("ix_cases_id_text", table_name="cases")
    op.drop_index("ix_notifications_role", table_name="notifications")
    op.drop_index("ix_case_tasks_due", table_name="case_tasks")
    op.drop_index("ix_case_tasks_branch_due", table_name="case_tasks")
