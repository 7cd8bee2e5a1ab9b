"""Intake: sent customer messages and lapsed message limits are deleted by the retention purge
(batched, beside the relay) instead of by the notification sender's hourly unbatched DELETE
and a random one in a hundred complaints' numbering; the numbering takes its number from
next_reference_number (0002) instead of a copy of it.

message_limits gets no index on its time: every allowance taken moves it, and an index would
cost each complaint more than the hourly scan of a table bounded by an hour's distinct keys.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NUMBER_COMPLAINT = """
    CREATE OR REPLACE FUNCTION number_complaint(
        p_branch text, p_day date, p_poster text, p_poster_per interval, p_poster_messages integer,
        p_recipient text, p_recipient_per interval, p_recipient_messages integer,
        OUT reference_number integer, OUT poster_wait_seconds double precision, OUT recipient_allowed boolean)
    LANGUAGE plpgsql AS $$
    -- The branch's next number of the day, unless the poster is over its limit (then
    -- only how long to wait); and whether the acknowledgement's recipient is within its.
    DECLARE
        wait interval;
    BEGIN
        PERFORM set_config('synchronous_commit', 'off', true);  -- for a refusal too, as before
        wait := take_message_allowance('poster:' || p_poster, p_poster_per, p_poster_messages);
        IF wait IS NOT NULL THEN
            poster_wait_seconds := extract(epoch FROM wait);
            RETURN;
        END IF;
        recipient_allowed := p_recipient IS NULL
            OR take_message_allowance('recipient:' || p_recipient, p_recipient_per, p_recipient_messages) IS NULL;
        reference_number := next_reference_number(p_branch, p_day);  -- not flushed on commit (0002)
    END $$
"""


def upgrade():
    op.execute(NUMBER_COMPLAINT)
    with op.get_context().autocommit_block():  # without blocking the sender's writes
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_notifications_done_at "
                   "ON notifications ((coalesce(sent_at, failed_at)))")


def downgrade():
    op.execute("DROP INDEX IF EXISTS ix_notifications_done_at")
    op.execute(NUMBER_COMPLAINT.replace(
        "reference_number := next_reference_number(p_branch, p_day);  -- not flushed on commit (0002)",
        """INSERT INTO reference_counters AS c (branch_code, day, last) VALUES (p_branch, p_day, 1)
        ON CONFLICT (branch_code, day) DO UPDATE SET last = c.last + 1
        RETURNING last INTO reference_number;
        IF random() < 0.001 THEN
            DELETE FROM message_limits WHERE allowed_from < now();
        END IF;"""))
