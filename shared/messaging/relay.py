"""The relay: publishes each service's outbox to its nameko exchange. (Queued messages to
customers and staff go out through shared.notifications.sender, in a loop of its own, so
a slow gateway never delays an event.)

Rows are locked (FOR UPDATE SKIP LOCKED, so several relays may run), published with
publisher confirms, one confirm wait per batch, and marked sent in the same transaction.
A row is marked only once the broker confirmed it: a crash in between publishes it again
(at-least-once; consumers are idempotent on event_id).
"""
from __future__ import annotations

import logging
import os
import threading
import time

import kombu
import sqlalchemy as sa

from shared.messaging.outbox import OUTBOX

log = logging.getLogger("closeloop.relay")


class ConfirmFailed(Exception):
    pass


class Publisher:
    """Batched publisher confirms on one kombu (py-amqp) channel."""

    def __init__(self, amqp_uri: str, confirm_timeout: float = 10.0):
        self._uri = amqp_uri
        self._timeout = confirm_timeout
        self._conn: kombu.Connection | None = None
        self._declared: set[str] = set()

    def _connect(self):
        # Every wait for the broker is bounded: a broker that keeps the connection open but
        # says nothing (a partition, a paused host) must fail the round, not hang the relay.
        conn = kombu.Connection(self._uri, connect_timeout=5, transport_options={"confirm_publish": False})
        conn.connect()
        # py-amqp's read_timeout is SO_RCVTIMEO, which eventlet's green sockets ignore.
        conn.connection.transport.sock.settimeout(self._timeout)
        channel = conn.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._conn, self._channel = conn, channel
        self._next_tag, self._unconfirmed, self._nacked = 1, set(), False
        self._declared.clear()

    def _on_ack(self, delivery_tag, multiple):
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag, multiple):
        self._nacked = True
        self._on_ack(delivery_tag, multiple)

    def publish_batch(self, messages) -> None:
        """Publish (exchange, routing_key, body, event_id) tuples; returns once all are confirmed."""
        if self._conn is None:
            self._connect()
        channel = self._channel
        self._nacked = False
        for exchange, routing_key, body, event_id in messages:
            if exchange not in self._declared:
                # Declared exactly as nameko declares event exchanges.
                channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
                self._declared.add(exchange)
            message = channel.prepare_message(
                body.encode("utf-8"), content_type="application/json", content_encoding="utf-8",
                properties={"delivery_mode": 2, "message_id": event_id})
            channel.basic_publish(message, exchange=exchange, routing_key=routing_key)
            self._unconfirmed.add(self._next_tag)
            self._next_tag += 1
        deadline = time.monotonic() + self._timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmFailed(f"{len(self._unconfirmed)} publishes not confirmed in {self._timeout}s")
            self._conn.drain_events(timeout=remaining)
        if self._nacked:
            raise ConfirmFailed("the broker refused (nacked) part of the batch")

    def ping(self) -> None:
        """A round trip to the broker (connecting if needed); raises when it is unreachable."""
        if self._conn is None:
            self._connect()
        self._channel.exchange_declare("amq.topic", "topic", passive=True)

    def close(self, graceful: bool = False) -> None:
        """Close the connection; after a failure, without the closing handshake, which a
        silent broker would never answer."""
        if self._conn is not None:
            try:
                self._conn.release() if graceful else self._conn.collect()
            except Exception:  # the connection may already be gone
                pass
        self._conn = None


class Relay:
    def __init__(self, engine: sa.Engine, amqp_uri: str, *, batch_size: int = 500,
                 idle_wait: float = 0.05, service: str = "?", ping_interval: float = 10.0,
                 broker_timeout: float = 10.0):
        self.engine = engine
        self.publisher = Publisher(amqp_uri, confirm_timeout=broker_timeout)
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.ping_interval = ping_interval
        # Set by `closeloop relay` for container health checks: touched after each healthy round.
        self.heartbeat_file = None
        self._last_beat = 0.0
        self.service = service
        self.published = 0
        self._stop = threading.Event()
        self.broker_ok = None

    def publish_pending(self) -> int:
        """Publish one batch of the outbox; returns how many rows were sent."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(OUTBOX.c.id, OUTBOX.c.exchange, OUTBOX.c.routing_key, OUTBOX.c.body,
                          OUTBOX.c.event_id)
                .where(OUTBOX.c.sent_at.is_(None)).order_by(OUTBOX.c.id)
                .limit(self.batch_size).with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            self.publisher.publish_batch([(r.exchange, r.routing_key, r.body, str(r.event_id)) for r in rows])
            conn.execute(OUTBOX.update().where(OUTBOX.c.id.in_([r.id for r in rows]))
                         .values(sent_at=sa.func.now()))
        self.published += len(rows)
        return len(rows)

    def purge_sent(self, older_than_days: int = 7) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM outbox WHERE sent_at < now() - make_interval(days => :d)"),
                         {"d": older_than_days})

    def run(self) -> None:
        """Loop until stop(): publish, back off on failures (up to 5 s)."""
        backoff = 0.0
        last_purge = 0.0
        log.info("relay for %s started", self.service)
        last_contact = 0.0
        while not self._stop.is_set():
            try:
                sent = self.publish_pending()
                if sent:
                    last_contact = time.monotonic()
                elif time.monotonic() - last_contact > self.ping_interval:
                    self.publisher.ping()  # an idle relay still proves the broker answers
                    last_contact = time.monotonic()
                if self.broker_ok is not True:
                    log.info("relay for %s: broker reachable", self.service)
                self.broker_ok = True
                if time.monotonic() - last_purge > 3600:
                    self.purge_sent()
                    last_purge = time.monotonic()
                backoff = 0.0
                self._beat()
                if sent < self.batch_size:
                    self._stop.wait(self.idle_wait)
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                backoff = min(max(backoff * 2, 0.2), 5.0)
                log.warning("relay for %s: database unavailable (%s); retrying in %.1fs",
                            self.service, exc.__class__.__name__, backoff)
                self._stop.wait(backoff)
            except Exception as exc:  # broker gone, confirm lost: keep the rows, reconnect later
                self.broker_ok = False
                self.publisher.close()
                backoff = min(max(backoff * 2, 0.2), 5.0)
                log.warning("relay for %s: publish failed (%s: %s); retrying in %.1fs",
                            self.service, exc.__class__.__name__, exc, backoff)
                self._stop.wait(backoff)
        self.publisher.close(graceful=self.broker_ok is True)
        log.info("relay for %s stopped after %d events", self.service, self.published)

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        if self.heartbeat_file is not None and time.monotonic() - self._last_beat > 1:
            self.heartbeat_file.touch()
            self._last_beat = time.monotonic()


def heartbeat_path(service: str):
    import tempfile
    from pathlib import Path

    return Path(os.environ.get("CLOSELOOP_RUN_DIR", tempfile.gettempdir())) / f"closeloop-relay-{service}.alive"
