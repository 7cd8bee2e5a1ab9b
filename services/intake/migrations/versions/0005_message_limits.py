"""Intake: limits on what posters can make intake send, kept across replicas.

One row per limited key (a token subject, or a customer's contact as its keyed hash):
the time from which its next message is allowed (the generic cell rate algorithm, GCRA:
"N per period" as a burst of N, then one each period/N, with no burst at a window's edge).
The check is folded into the statement that already numbers a complaint
(`number_complaint`), so the hot path gains no round trip. The table is UNLOGGED: no WAL
for a counter that may reset after a crash.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE UNLOGGED TABLE message_limits (key text PRIMARY KEY, allowed_from timestamptz NOT NULL)")
    op.execute("""
        CREATE FUNCTION take_message_allowance(p_key text, p_per interval, p_messages integer)
        RETURNS interval LANGUAGE plpgsql AS $$
        -- NULL when one more message is allowed (and counted); else how long until it is.
        DECLARE
            step interval := p_per / p_messages;
            next_from timestamptz;
        BEGIN
            INSERT INTO message_limits AS m (key, allowed_from) VALUES (p_key, now() + step)
            ON CONFLICT (key) DO UPDATE SET allowed_from = greatest(m.allowed_from, now()) + step
                WHERE greatest(m.allowed_from, now()) + step <= now() + p_per
            RETURNING allowed_from INTO next_from;
            IF FOUND THEN
                RETURN NULL;
            END IF;
            SELECT allowed_from INTO next_from FROM message_limits WHERE key = p_key;
            RETURN next_from + step - p_per - now();
        END $$
    """)
    op.execute("""
        CREATE FUNCTION number_complaint(
            p_branch text, p_day date, p_poster text, p_poster_per interval, p_poster_messages integer,
            p_recipient text, p_recipient_per interval, p_recipient_messages integer,
            OUT reference_number integer, OUT poster_wait_seconds double precision, OUT recipient_allowed boolean)
        LANGUAGE plpgsql AS $$
        -- The branch's next number of the day, unless the poster is over its limit (then
        -- only how long to wait); and whether the acknowledgement's recipient is within its.
        -- Not flushed on commit, like next_reference_number (migration 0002).
        DECLARE
            wait interval;
        BEGIN
            PERFORM set_config('synchronous_commit', 'off', true);
            wait := take_message_allowance('poster:' || p_poster, p_poster_per, p_poster_messages);
            IF wait IS NOT NULL THEN
                poster_wait_seconds := extract(epoch FROM wait);
                RETURN;
            END IF;
            recipient_allowed := p_recipient IS NULL
                OR take_message_allowance('recipient:' || p_recipient, p_recipient_per, p_recipient_messages) IS NULL;
            INSERT INTO reference_counters AS c (branch_code, day, last) VALUES (p_branch, p_day, 1)
            ON CONFLICT (branch_code, day) DO UPDATE SET last = c.last + 1
            RETURNING last INTO reference_number;
            IF random() < 0.001 THEN  -- a lapsed row means the same as no row
                DELETE FROM message_limits WHERE allowed_from < now();
            END IF;
        END $$
    """)


def downgrade():
    op.execute("DROP FUNCTION number_complaint(text, date, text, interval, integer, text, interval, integer)")
    op.execute("DROP FUNCTION take_message_allowance(text, interval, integer)")
    op.execute("DROP TABLE message_limits")
