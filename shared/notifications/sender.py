"""The notification sender: sends what the queue holds, in a loop of its own beside the
event relay, so a slow or failing gateway never delays an event.

- Claim: due rows are taken in a short transaction of their own (FOR UPDATE SKIP LOCKED,
  so several senders may run); their next_attempt_at moves to the end of a lease and the
  attempt is counted. A sender that dies holds its rows only until the lease ends: a
  crash sends again at most the rows that were in flight.
- Send: each row outside any transaction, with a timeout, at most `batch` at a time;
  a row is claimed only when a send slot is free, so a slow call holds only its own slot.
- Record: per row, in a short transaction: sent; or tried again after a back-off counted
  from this attempt (2 s, 4 s, ... up to an hour, with jitter); or given up. The final
  outcome (sent or given up) calls `on_outcome(conn, row, delivered, error)` in that same
  transaction, so a service can write an outbox event with it.

Every time is the database's now(): the process keeps no clock of its own.
"""
from __future__ import annotations

import logging
import random
import threading
import time

import eventlet
import sqlalchemy as sa

from shared.notifications.port import Undeliverable
from shared.notifications.queue import MAX_ATTEMPTS, NOTIFICATIONS as N
from shared.security.privacy import mask_contact

log = logging.getLogger("closeloop.notify")

# What the adapter and the outcome hook get of a claimed row.
CLAIMED = (N.c.id, N.c.audience, N.c.channel, N.c.recipient, N.c.language, N.c.body, N.c.log_text,
           N.c.subject_id, N.c.request_event_id, N.c.attempts, N.c.created_at)
# The database is away (or every pooled connection is stuck on it): wait, don't give up.
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def backoff(attempts: int, base: float = 2.0, cap: float = 3600.0) -> float:
    """Seconds before the next try after `attempts` failed ones: 2, 4, 8, ... up to `cap`,
    each within 10% either side, so rows that failed together are not retried together."""
    nominal = min(cap, base * 2 ** min(max(attempts, 1) - 1, 30))
    return nominal * random.uniform(0.9, 1.1)


def _interval(seconds: float):
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float))


class NotificationSender:
    def __init__(self, engine: sa.Engine, notifier, *, service: str = "?", batch: int = 8,
                 timeout_s: float = 10.0, lease_s: float = 60.0, max_attempts: int = MAX_ATTEMPTS,
                 on_outcome=None, idle_wait: float = 0.2):
        if lease_s <= timeout_s:
            # A row still being sent must not be claimable by another sender.
            raise ValueError(f"the claim lease ({lease_s:g}s) must be longer than the send timeout ({timeout_s:g}s)")
        if batch < 1 or max_attempts < 1:
            raise ValueError("batch and max_attempts must be at least 1")
        self.engine = engine
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
        due = (sa.select(N.c.id)
               .where(N.c.sent_at.is_(None), N.c.failed_at.is_(None), N.c.next_attempt_at <= sa.func.now())
               .order_by(N.c.next_attempt_at, N.c.id).limit(limit).with_for_update(skip_locked=True))
        with self.engine.begin() as conn:
            return conn.execute(
                N.update().where(N.c.id.in_(due))
                .values(attempts=N.c.attempts + 1, next_attempt_at=sa.func.now() + _interval(self.lease_s))
                .returning(*CLAIMED)).all()

    def _deliver(self, row) -> None:
        try:
            if row.attempts > self.max_attempts:
                # The last attempt was cut short (a crash after the claim): nothing left to try.
                self._record(row, False, "no attempt left: the last one was interrupted", give_up=True)
                return
            try:
                with eventlet.Timeout(self.timeout_s) as timer:
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
        if delivered:
            values = {"sent_at": sa.func.now()}  # last_error stays: what the earlier attempts met
        elif final:
            values = {"failed_at": sa.func.now(), "last_error": error}
        else:
            delay = backoff(row.attempts)
            values = {"last_error": error, "next_attempt_at": sa.func.now() + _interval(delay)}
        # Still ours: no other sender claimed it since (attempts is the claim's token).
        ours = sa.and_(N.c.id == row.id, N.c.attempts == row.attempts, N.c.sent_at.is_(None),
                       N.c.failed_at.is_(None))
        deadline = time.monotonic() + self.lease_s - self.timeout_s
        pause = 0.0
        while True:
            try:
                with self.engine.begin() as conn:
                    if conn.execute(N.update().where(ours).values(**values)).rowcount == 0:
                        log.warning("notification %s: claimed again by another sender; its result is "
                                    "left to that one", row.id)
                        return
                    if final and self.on_outcome is not None:
                        self.on_outcome(conn, row, delivered, error)
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

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until stop(): claim into free send slots, back off while the database is away."""
        log.info("notification sender for %s started", self.service)
        pause = 0.0
        while not self._stop.is_set():
            self._slot_freed.clear()
            free = self._pool.free()
            if free == 0:
                self._slot_freed.wait(self.idle_wait)  # every slot busy: claim when one ends
                continue
            try:
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
