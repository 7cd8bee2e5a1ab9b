"""The notification sender: sends what the queue holds, in a loop of its own beside the
event relay, so a slow or failing gateway never delays an event.

- Claim: due rows are taken by one statement, a transaction of its own (FOR UPDATE SKIP
  LOCKED, so several senders may run); their next_attempt_at moves to the end of a lease
  and the attempt is counted. A sender that dies holds its rows only until the lease
  ends: a crash sends again at most the rows that were in flight.
- Send: each row outside any transaction, with a timeout, at most `batch` at a time;
  rows are claimed only into free send slots, so a slow call holds only its own slot.
- Record: per row, in a short transaction of its own: sent; or tried again after a
  back-off counted from this attempt (2 s, 4 s, ... up to an hour, with jitter); or given
  up. The final outcome (sent or given up) of a message another service asked for (its
  `request_event_id` set) calls `on_outcome(conn, row, delivered, error)`
  in that same transaction, so a service can write an outbox event with it.

Every time is the database's now(): the process keeps no clock of its own.

Cost matters: the sender shares the database (and often the machine) with its service.
It holds two connections, each used by one greenlet at a time (no pool checkout per
message): claims and results without a hook are single autocommit statements on one (no
BEGIN and COMMIT round trips); results with a hook are transactions on the other. Its
commits do not wait for their WAL flush (synchronous_commit off on its connections: give
it an engine of its own). What
a database crash could take back is a claim or a result, and either only means the message
is sent again; an outcome hook's writes go with the result they belong to.
"""
from __future__ import annotations

import logging
import random
import threading
import time

import eventlet
import eventlet.event
import eventlet.tpool
import sqlalchemy as sa
from eventlet.semaphore import Semaphore

from shared.notifications.port import Undeliverable
from shared.notifications.queue import MAX_ATTEMPTS
from shared.security.privacy import mask_contact

log = logging.getLogger("closeloop.notify")

# The adapter and the outcome hook get the claimed row: these columns.
CLAIM = sa.text("""
    UPDATE notifications SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
    WHERE id IN (SELECT id FROM notifications
                 WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
                 ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED)
    RETURNING id, audience, channel, recipient, language, body, log_text, subject_id, request_event_id,
              attempts, created_at""")
# A result counts only while the row is still ours: no other sender claimed it since
# (attempts is the claim's token).
_OURS = "WHERE id = :id AND attempts = :attempts AND sent_at IS NULL AND failed_at IS NULL"
MARK_SENT = sa.text(f"UPDATE notifications SET sent_at = now() {_OURS}")  # last_error stays: earlier attempts
# Rows sent meanwhile, marked together (see `_mark_sent`).
MARK_SENT_TOGETHER = sa.text(
    "UPDATE notifications n SET sent_at = now() "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[])) AS d(id, attempts) "
    "WHERE n.id = d.id AND n.attempts = d.attempts AND n.sent_at IS NULL AND n.failed_at IS NULL "
    "RETURNING n.id")
MARK_GIVEN_UP = sa.text(f"UPDATE notifications SET failed_at = now(), last_error = :error {_OURS}")
MARK_RETRY = sa.text("UPDATE notifications SET last_error = :error, "
                     f"next_attempt_at = now() + make_interval(secs => :delay) {_OURS}")
# The database is away (or every pooled connection is stuck on it): wait, don't give up.
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def backoff(attempts: int, base: float = 2.0, cap: float = 3600.0) -> float:
    """Seconds before the next try after `attempts` failed ones: 2, 4, 8, ... up to `cap`,
    each within 10% either side, so rows that failed together are not retried together."""
    nominal = min(cap, base * 2 ** min(max(attempts, 1) - 1, 30))
    return nominal * random.uniform(0.9, 1.1)


def _commit_without_flush_wait(dbapi_connection, _record) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    dbapi_connection.commit()


class _HeldConnection:
    """A connection the sender keeps, used by one greenlet at a time (its work is short);
    dropped when the database goes away, opened again on next use."""

    def __init__(self, engine: sa.Engine, autocommit: bool):
        self._engine = engine
        self._autocommit = autocommit
        self._conn: sa.Connection | None = None
        self._lock = Semaphore(1)

    def __call__(self, work):
        """work(conn) under the lock; its value."""
        with self._lock:
            try:
                if self._conn is None:
                    conn = self._engine.connect()
                    self._conn = conn.execution_options(isolation_level="AUTOCOMMIT") if self._autocommit else conn
                return work(self._conn)
            except DATABASE_DOWN:
                self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken
                pass
            self._conn = None


class NotificationSender:
    def __init__(self, engine: sa.Engine, notifier, *, service: str = "?", batch: int = 32,
                 timeout_s: float = 10.0, lease_s: float = 60.0, max_attempts: int = MAX_ATTEMPTS,
                 on_outcome=None, idle_wait: float = 0.2):
        if lease_s <= timeout_s:
            # A row still being sent must not be claimable by another sender.
            raise ValueError(f"the claim lease ({lease_s:g}s) must be longer than the send timeout ({timeout_s:g}s)")
        if batch < 1 or max_attempts < 1:
            raise ValueError("batch and max_attempts must be at least 1")
        self.engine = engine
        sa.event.listen(engine, "connect", _commit_without_flush_wait)
        self._to_mark: list = []  # sent rows waiting to be marked together
        self._statements = _HeldConnection(engine, autocommit=True)     # claims, results without a hook
        self._transactions = _HeldConnection(engine, autocommit=False)  # results with their hook
        self.notifier = notifier
        self.service = service
        self.batch = batch  # rows in flight at most
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.on_outcome = on_outcome
        self.idle_wait = idle_wait
        self.sent = 0
        self.given_up = 0
        self.database_ok: bool | None = None
        self.database_errors = 0  # statements that found the database away, since start
        self._pool = eventlet.GreenPool(batch)
        self._stop = threading.Event()
        self._slot_freed = threading.Event()  # a send ended: the loop may claim again

    # --- one round -------------------------------------------------------------------------

    def send_due(self) -> int:
        """Claim what is due (up to the free send slots), send it and record each outcome;
        returns how many rows were claimed, once all of them are recorded."""
        claimed = self._dispatch(self._pool.free())
        self._pool.waitall()
        return claimed

    def _dispatch(self, limit: int) -> int:
        rows = self._claim(limit) if limit > 0 else []
        for row in rows:
            self._pool.spawn_n(self._deliver, row)
        return len(rows)

    def _claim(self, limit: int) -> list:
        params = {"lease": float(self.lease_s), "limit": limit}
        return self._statements(lambda conn: conn.execute(CLAIM, params).all())

    def close(self) -> None:
        """Give back the connections the sender holds (run() does it when it stops)."""
        self._statements.close()
        self._transactions.close()

    def _deliver(self, row) -> None:
        try:
            if row.attempts > self.max_attempts:
                # The last attempt was cut short (a crash after the claim): nothing left to try.
                self._record(row, False, "no attempt left: the last one was interrupted", give_up=True)
                return
            try:
                with eventlet.Timeout(self.timeout_s) as timer:
                    if getattr(self.notifier, "blocking", False):
                        # An adapter that blocks outside eventlet (a C client library) runs in
                        # a real thread, so the timeout and the event relay beside it still run.
                        eventlet.tpool.execute(self.notifier.send, row)
                    else:
                        self.notifier.send(row)
            except eventlet.Timeout as exc:
                text = f"no answer in {self.timeout_s:g}s" if exc is timer else f"Timeout: {exc}"
                self._record(row, False, text)
            except Undeliverable as exc:
                self._record(row, False, self._error_text(row, exc), give_up=True, shown=self._shown(row, exc))
            except Exception as exc:  # a failing adapter costs an attempt, never the sender
                self._record(row, False, self._error_text(row, exc), shown=self._shown(row, exc))
            else:
                self._record(row, True, None)
        except Exception:
            log.exception("notification %s: unexpected error; it is tried again after its lease", row.id)
        finally:
            self._slot_freed.set()

    @staticmethod
    def _error_text(row, exc: Exception) -> str:
        """For last_error: the adapter's words, the customer's contact masked."""
        text = f"{exc.__class__.__name__}: {exc}"[:500]
        if row.audience != "staff" and row.recipient:  # gateways like to echo the number
            text = text.replace(row.recipient, mask_contact(row.recipient))
        return text

    @staticmethod
    def _shown(row, exc: Exception) -> str:
        """For the log: an adapter's message about a customer's message may quote the body
        (the customer's name): only its kind is logged; last_error has the rest."""
        if row.audience == "staff":
            return f"{exc.__class__.__name__}: {exc}"[:500]
        return f"{exc.__class__.__name__} (see last_error)"

    def _record(self, row, delivered: bool, error: str | None, give_up: bool = False,
                shown: str | None = None) -> None:
        """The attempt's result, in a transaction of its own; retried while the database
        is away, for as long as the row's lease lasts (after that it is sent again anyway)."""
        final = delivered or give_up or row.attempts >= self.max_attempts
        params = {"id": row.id, "attempts": row.attempts}
        if delivered:
            statement = MARK_SENT
        elif final:
            statement, params["error"] = MARK_GIVEN_UP, error
        else:
            delay = backoff(row.attempts)
            statement, params["error"], params["delay"] = MARK_RETRY, error, delay
        # Only a message another service asked for has someone waiting for its outcome; the
        # rest (acknowledgements) are recorded by one statement, the cheap path.
        hook = self.on_outcome if final and row.request_event_id is not None else None
        deadline = time.monotonic() + self.lease_s - self.timeout_s
        pause = 0.0
        while True:
            try:
                if delivered and hook is None:
                    recorded = self._mark_sent(row)
                elif hook is None:  # one statement is a transaction of its own
                    recorded = self._statements(lambda conn: conn.execute(statement, params).rowcount)
                else:
                    def with_hook(conn):
                        with conn.begin():
                            changed = conn.execute(statement, params).rowcount
                            if changed:
                                hook(conn, row, delivered, error)
                        return changed
                    recorded = self._transactions(with_hook)
                if not recorded:
                    log.warning("notification %s: claimed again by another sender; its result is "
                                "left to that one", row.id)
                    return
                break
            except DATABASE_DOWN as exc:
                self._database_down(exc)
                pause = min(max(pause * 2, 0.2), 5.0)
                if time.monotonic() + pause > deadline:
                    log.warning("notification %s: result not recorded (database away); it is sent again "
                                "after its lease", row.id)
                    return
                eventlet.sleep(pause)
            except Exception:
                log.exception("notification %s: recording its outcome failed (outcome hook?); rolled back, "
                              "it is tried again after its lease", row.id)
                return
        if delivered:
            self.sent += 1
        elif final:
            self.given_up += 1
            log.warning("notification %s to %s given up after %d attempt(s): %s", row.id,
                        row.audience, row.attempts, shown or error)
        else:
            log.warning("notification %s: attempt %d failed (%s); next try in about %.0fs",
                        row.id, row.attempts, shown or error, delay)

    def _mark_sent(self, row) -> bool:
        """Mark a sent row, together with the rows other sends finished meanwhile: whoever
        holds the connection next marks every one waiting in one statement, so a busy sender
        costs the database one statement per round instead of one per message. Returns once
        this row is recorded (False: another sender holds it now); raises as the statement did."""
        waiter = eventlet.event.Event()
        self._to_mark.append((row.id, row.attempts, waiter))

        def mark_waiting(conn):
            batch, self._to_mark = self._to_mark, []
            if not batch:
                return  # another greenlet marked ours already
            try:
                marked = set(conn.execute(MARK_SENT_TOGETHER, {"ids": [b[0] for b in batch],
                                                               "attempts": [b[1] for b in batch]}).scalars())
            except BaseException as exc:
                for _, _, each in batch:
                    each.send_exception(exc)
                raise
            for row_id, _, each in batch:
                each.send(row_id in marked)

        try:
            self._statements(mark_waiting)
        except DATABASE_DOWN:
            pass  # every waiter of that batch, ours included, got the error: raised below
        return waiter.wait()

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until stop(): claim into free send slots, back off while the database is away.
        Busy, it claims once half the slots are free (or the idle pause has passed), so one
        claim serves several messages."""
        log.info("notification sender for %s started", self.service)
        pause = 0.0
        enough = max(1, self.batch // 2)
        last_claim = 0.0
        while not self._stop.is_set():
            self._slot_freed.clear()
            free = self._pool.free()
            wait = self.idle_wait - (time.monotonic() - last_claim)
            if free == 0 or (free < enough and wait > 0):
                self._slot_freed.wait(wait if free else self.idle_wait)  # until a send ends
                continue
            try:
                last_claim = time.monotonic()
                claimed = self._dispatch(free)
            except DATABASE_DOWN as exc:
                self._database_down(exc)
                pause = min(max(pause * 2, 0.2), 5.0)
                self._stop.wait(pause)
                continue
            except Exception:
                log.exception("notification sender for %s: claiming failed", self.service)
                pause = min(max(pause * 2, 0.2), 5.0)
                self._stop.wait(pause)
                continue
            if self.database_ok is False:
                log.info("notification sender for %s: database reachable again", self.service)
            self.database_ok = True
            pause = 0.0
            if claimed < free:  # nothing more is due now
                self._stop.wait(self.idle_wait)
        self._pool.waitall()  # sends in flight end within the timeout and are recorded
        self.close()
        log.info("notification sender for %s stopped after %d sent", self.service, self.sent)

    def stop(self) -> None:
        self._stop.set()
        self._slot_freed.set()

    def _database_down(self, exc: Exception) -> None:
        self.database_errors += 1
        if self.database_ok is not False:  # once per outage
            log.warning("notification sender for %s: database unavailable (%s); backing off",
                        self.service, exc.__class__.__name__)
        self.database_ok = False
