"""Consuming events safely: `@handle_event(source, type)` instead of nameko's event_handler.

- The message is decoded here, not by kombu, so a body that is not JSON, not an envelope
  or fails its schema is parked in the handler's dead-letter queue at once (nameko's
  consumer would ack and drop it).
- A failing handler is retried through per-delay TTL queues (growing delays), then parked
  in the dead-letter queue. The copy is confirmed by the broker before the original is
  acked, so a failure never loses the message, never blocks the queue and never loops hot.
- Duplicates have one effect: a worker of this entrypoint gets a Store whose unit of work
  claims the event in the inbox in the same transaction (shared.persistence.db.Database does this).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from functools import partial

import eventlet
import kombu
from eventlet.semaphore import Semaphore
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint, SharedExtension
from nameko.messaging import QueueConsumer

from shared.messaging import topology
from shared.observability import metrics
from shared.messaging.envelope import EventSchemaError, parse_event
from shared.messaging.inbox import AlreadyHandled

log = logging.getLogger("closeloop.consumer")
H = topology.HEADER


class RawQueueConsumer(QueueConsumer):
    """nameko's queue consumer, but messages of EventConsumer entrypoints reach them
    undecoded, so that a body kombu cannot decode is parked instead of acked."""

    def get_consumers(self, consumer_cls, channel):
        for provider in self._providers:
            consumer = consumer_cls(queues=[provider.queue], on_message=partial(self._on_raw, provider), accept=None)
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[provider] = consumer
        return self._consumers.values()

    def _on_raw(self, provider, message):
        self.container.spawn_managed_thread(partial(provider.handle_raw, message),
                                            identifier=f"{provider.topology.handler}.handle_raw")


class SidePublisher(SharedExtension):
    """Publishes retry and dead-letter copies, waiting for the broker's confirm."""

    def __init__(self):
        # Here, not in setup(): the entrypoints' setup() may run first and declare through it.
        super().__init__()
        self._lock = Semaphore()
        self._conn = None
        self._returned = None

    def _producer(self):
        if self._conn is None:
            self._conn = kombu.Connection(self.container.config["AMQP_URI"], connect_timeout=5,
                                          transport_options={"confirm_publish": True})
            self._producer_obj = kombu.Producer(self._conn.channel(), on_return=self._on_return)
        return self._producer_obj

    def _on_return(self, exception, exchange, routing_key, message):
        # The broker returns a mandatory message it cannot route before it confirms it.
        self._returned = f"no queue {routing_key!r} ({exception})"

    def declare(self, topology: topology.HandlerTopology) -> None:
        with self._lock:
            topology.declare(self._producer().channel)

    def publish(self, queue_name: str, message, headers: dict) -> None:
        """Raises unless the broker confirmed the copy into an existing queue (mandatory: a
        copy sent to a missing queue would otherwise be confirmed and dropped)."""
        with self._lock:
            self._returned = None
            try:
                self._producer().publish(
                    message.body, exchange="", routing_key=queue_name, headers=headers, mandatory=True,
                    content_type=message.content_type or "application/octet-stream",
                    content_encoding=message.content_encoding or "binary",
                    message_id=message.properties.get("message_id"), delivery_mode=2, serializer=None)
            except Exception:
                self.stop()  # reconnect on the next publish
                raise
            if self._returned:
                raise RuntimeError(f"the broker could not route the copy: {self._returned}")

    def stop(self):
        if self._conn is not None:
            try:
                self._conn.release()
            except Exception:
                pass
        self._conn = None


class EventConsumer(Entrypoint):
    queue_consumer = RawQueueConsumer()
    side_publisher = SidePublisher()

    def __init__(self, source_service: str, event_type: str, **kwargs):
        self.source_service = source_service
        self.event_type = event_type
        kwargs.setdefault("expected_exceptions", AlreadyHandled)
        super().__init__(**kwargs)

    def setup(self):
        self.topology = topology.HandlerTopology(self.source_service, self.event_type, self.container.service_name,
                                            self.method_name, topology.retry_delays(self.container.config))
        self.queue = self.topology.queue()
        self.metrics = metrics.registry(self.container.service_name)
        self.side_publisher.declare(self.topology)  # retry and dead-letter queues exist before any failure
        self.queue_consumer.register_provider(self)

    def stop(self):
        self.queue_consumer.unregister_provider(self)
        super().stop()

    # -- arrival ------------------------------------------------------------------------------

    def handle_raw(self, message):
        try:
            attempt = min(max(int((message.headers or {}).get(f"{H}attempt", 1)), 1), self.topology.max_attempts)
        except (TypeError, ValueError):
            attempt = 1  # a header we did not write: count from the start
        try:
            body = json.loads(message.body)
        except (ValueError, TypeError, RecursionError) as exc:
            return self._park(message, "malformed", f"not JSON: {exc.__class__.__name__}: {exc}"[:500], attempt)
        try:
            event = parse_event(body)
        except (EventSchemaError, RecursionError) as exc:
            return self._park(message, "malformed", str(exc)[:1000], attempt)
        started = time.perf_counter()
        try:
            self.container.spawn_worker(
                self, (event,), {}, context_data={"correlation_id": event["correlation_id"]},
                handle_result=partial(self._handle_result, message, attempt, started))
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def _handle_result(self, message, attempt, started, worker_ctx, result=None, exc_info=None):
        labels = {"handler": self.topology.handler}
        self.metrics.observe("closeloop_event_handler_duration_seconds", "event handler latency",
                             time.perf_counter() - started, **labels)
        if exc_info is None:
            self._count("handled", labels)
            self.queue_consumer.ack_message(message)
        elif isinstance(exc_info[1], AlreadyHandled):
            self._count("duplicate", labels)
            self.queue_consumer.ack_message(message)
        elif attempt < self.topology.max_attempts:
            self._retry(message, attempt, exc_info[1])
        else:
            self._park(message, "failed", f"{exc_info[0].__name__}: {exc_info[1]}", attempt)
        return result, exc_info

    # -- failure paths ------------------------------------------------------------------------

    def _count(self, outcome, labels):
        self.metrics.inc("closeloop_events_total", "events by handler and outcome", outcome=outcome, **labels)

    def _side_copy(self, queue_name: str, message, headers: dict) -> bool:
        original = message.headers or {}
        # Where it first came from: after a retry it arrives through the default exchange.
        origin = {f"{H}routing-key": message.delivery_info.get("routing_key"),
                  f"{H}exchange": message.delivery_info.get("exchange")}
        try:
            self.side_publisher.publish(queue_name, message, {**origin, **original, **headers})
        except Exception as exc:
            # Without a confirmed copy the original must not be acked: put it back, after a
            # pause so that a broker in trouble is not hammered.
            log.error("could not move a message to %s (%s); requeueing it", queue_name, exc)
            self._count("requeued", {"handler": self.topology.handler})
            eventlet.sleep(1)
            self.queue_consumer.requeue_message(message)
            return False
        self.queue_consumer.ack_message(message)
        return True

    def _retry(self, message, attempt, error):
        delay = self.topology.delays_ms[attempt - 1]
        log.warning("%s failed on attempt %d/%d (%s); retrying in %d ms", self.topology.handler, attempt,
                    self.topology.max_attempts, error, delay)
        if self._side_copy(self.topology.retry_name(delay), message,
                           {f"{H}attempt": attempt + 1, f"{H}error": str(error)[:500]}):
            self._count("retried", {"handler": self.topology.handler})

    def _park(self, message, reason: str, error: str, attempt: int):
        log.error("%s parks a message (%s): %s", self.topology.handler, reason, error[:500])
        headers = {f"{H}reason": reason, f"{H}error": error[:1000], f"{H}attempts": attempt,
                   f"{H}failed-at": datetime.now(timezone.utc).isoformat()}
        if self._side_copy(self.topology.dlq_name, message, headers):
            self._count("dead_lettered" if reason == "failed" else "malformed", {"handler": self.topology.handler})


handle_event = EventConsumer.decorator


def handlers_of(service_class, delays_ms: tuple[int, ...]) -> list[topology.HandlerTopology]:
    """Every safe event handler a nameko service class defines."""
    found = []
    for attribute in dir(service_class):
        method = getattr(service_class, attribute, None)
        for entrypoint in getattr(method, "nameko_entrypoints", ()):
            if isinstance(entrypoint, EventConsumer):
                found.append(topology.HandlerTopology(entrypoint.source_service, entrypoint.event_type,
                                             service_class.name, attribute, delays_ms))
    return found


def all_handlers(delays_ms: tuple[int, ...] | None = None) -> list[topology.HandlerTopology]:
    from shared.runtime.config import SERVICE_CLASSES, service_class

    delays = delays_ms or topology.retry_delays()
    return [h for name in SERVICE_CLASSES for h in handlers_of(service_class(name), delays)]
