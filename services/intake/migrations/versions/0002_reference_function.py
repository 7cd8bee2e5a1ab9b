"""Intake: the next reference number of a branch's day in one statement.

The counter's commit does not wait for its WAL flush (synchronous_commit off, for this
transaction only): the complaint's own synchronous commit comes later in the WAL and flushes
it too, so a number is durable whenever a complaint carrying it is. Run on an autocommit
connection, this is one round trip and holds the counter's row lock for microseconds.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
        CREATE FUNCTION next_reference_number(p_branch text, p_day date) RETURNS integer
        LANGUAGE sql AS $$
            SELECT set_config('synchronous_commit', 'off', true);
            INSERT INTO reference_counters AS c (branch_code, day, last) VALUES (p_branch, p_day, 1)
            ON CONFLICT (branch_code, day) DO UPDATE SET last = c.last + 1
            RETURNING last;
        $$
    """)


def downgrade():
    op.execute("DROP FUNCTION next_reference_number(text, date)")
