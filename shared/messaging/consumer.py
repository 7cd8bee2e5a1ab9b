"""Consuming events safely: `@handle_event(source, type)` instead of nameko's event_handler.

- The message is decoded here, not by kombu, so a body that is not JSON, not an envelope
  or fails its schema is parked in the handler's dead-letter queue at once (nameko's
  consumer would ack and drop it). An event of a newer version than this code knows is not
  malformed: it is retried, then parked as `newer_version`, to be replayed after the upgrade.
- A temporary failure (database, broker or another service away) is retried in place with
  capped back-off and uses up no attempt; the message stays unacked meanwhile, and as the
  replica's window fills the consumer stops taking more.
- Any other failure is retried through per-delay TTL queues (growing delays), then parked.
  Each copy is confirmed by the broker before the original is acked, so a failure never
  loses the message, never blocks the queue and never loops hot.
- One prefetch window per replica, shared by all its handlers, so replicas share work.
- Duplicates have one effect: a worker of this entrypoint gets a Store whose unit of work
  claims the event in the inbox in the same transaction (shared.persistence.db.Database).
"""
from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone
from functools import partial

import eventlet
from eventlet.semaphore import Semaphore
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint, SharedExtension
from nameko.messaging import QueueConsumer

from shared.messaging import topology
from shared.messaging.copies import CopyPublisher
from shared.messaging.envelope import EventSchemaError, NewerVersion, parse_event
from shared.messaging.failures import TEMPORARY, is_temporary, pause_after
from shared.messaging.inbox import AlreadyHandled
from shared.observability import metrics

log = logging.getLogger("closeloop.consumer")
H = topology.HEADER


class RawQueueConsumer(QueueConsumer):
    """nameko's queue consumer, but messages of EventConsumer entrypoints reach them
    undecoded, so that a body kombu cannot decode is parked instead of acked."""

    @property
    def prefetch_count(self):
        configured = self.container.config.get("EVENT_PREFETCH")
        if configured:
            return int(configured)
        # A batch consumer needs a window of more than one batch, or it never fills one.
        batches = max((getattr(p, "batch_size", 0) for p in self._providers), default=0)
        return max(self.container.max_workers, 2 * batches)

    def get_consumers(self, consumer_cls, channel):
        for provider in self._providers:
            self._consumers[provider] = consumer_cls(queues=[provider.queue], accept=None,
                                                     on_message=partial(self._on_raw, provider))
        if self._consumers:
            # One window for the whole replica: RabbitMQ's global QoS is shared by every
            # consumer on the channel. Per consumer, 30 handlers would hold 30 x max_workers
            # messages and starve the other replicas.
            next(iter(self._consumers.values())).qos(prefetch_count=self.prefetch_count, apply_global=True)
        return self._consumers.values()

    def _on_raw(self, provider, message):
        self.container.spawn_managed_thread(partial(provider.handle_raw, message),
                                            identifier=f"{provider.topology.handler}.handle_raw")


class SidePublisher(SharedExtension):
    """Publishes retry and dead-letter copies for every handler of the service."""

    def __init__(self):
        # Here, not in setup(): the entrypoints' setup() may run first and declare through it.
        super().__init__()
        self._lock = Semaphore()
        self._publisher = None

    def _ready(self) -> CopyPublisher:
        if self._publisher is None:
            self._publisher = CopyPublisher(self.container.config["AMQP_URI"])
        return self._publisher

    def declare(self, handler: topology.HandlerTopology) -> None:
        with self._lock:
            handler.declare(self._ready().channel)

    def publish(self, queue_name: str, message, headers: dict) -> None:
        """Raises unless the broker confirmed the copy into an existing queue."""
        with self._lock:
            self._ready().copy(message, headers, routing_key=queue_name)

    def stop(self):
        if self._publisher is not None:
            self._publisher.close()


class EventConsumer(Entrypoint):
    queue_consumer = RawQueueConsumer()
    side_publisher = SidePublisher()

    def __init__(self, source_service: str, event_type: str, **kwargs):
        self.source_service = source_service
        self.event_type = event_type
        # Expected: logged by this entrypoint in a line, not by nameko with a traceback each time.
        kwargs.setdefault("expected_exceptions", (AlreadyHandled, *TEMPORARY))
        super().__init__(**kwargs)

    def setup(self):
        self.topology = topology.HandlerTopology(self.source_service, self.event_type, self.container.service_name,
                                                 self.method_name, topology.retry_delays(self.container.config))
        self.queue = self.topology.queue()
        self.metrics = metrics.registry(self.container.service_name)
        self.pause_cap = float(self.container.config.get("EVENT_PAUSE_MAX_SECONDS", 30))
        self.waiting = 0  # messages held back after a temporary failure
        self.side_publisher.declare(self.topology)  # retry and dead-letter queues exist before any failure
        self.queue_consumer.register_provider(self)

    def stop(self):
        self.queue_consumer.unregister_provider(self)
        super().stop()

    # -- arrival ------------------------------------------------------------------------------

    def handle_raw(self, message):
        decoded = self._decode(message)
        if decoded is not None:
            self._dispatch(message, *decoded, pauses=0)

    def _decode(self, message):
        """(event, attempt), or None when the message was parked or sent to retry."""
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
        except NewerVersion as exc:
            return self._fail(message, attempt, "newer_version", str(exc))
        except (EventSchemaError, RecursionError) as exc:
            return self._park(message, "malformed", str(exc)[:1000], attempt)
        unexpected = self._unexpected(event)
        if unexpected:
            return self._park(message, "malformed", unexpected, attempt)
        return event, attempt

    def _unexpected(self, event) -> str | None:
        if (event["type"], event["source"]) != (self.event_type, self.source_service):
            return f"a {event['source']} {event['type']} event in the queue of {self.source_service} " \
                   f"{self.event_type} events"
        return None

    def _dispatch(self, message, event, attempt, pauses):
        started = time.perf_counter()
        try:
            self.container.spawn_worker(
                self, (event,), {}, context_data={"correlation_id": event["correlation_id"]},
                handle_result=partial(self._handle_result, message, event, attempt, pauses, started))
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def _handle_result(self, message, event, attempt, pauses, started, worker_ctx, result=None, exc_info=None):
        labels = {"handler": self.topology.handler}
        self.metrics.observe("closeloop_event_handler_duration_seconds", "event handler latency",
                             time.perf_counter() - started, **labels)
        if exc_info is None:
            self._count("handled")
            self.queue_consumer.ack_message(message)
            if pauses:
                log.info("%s: %s handled after %d pause(s)", self.topology.handler, event["event_id"], pauses)
        elif isinstance(exc_info[1], AlreadyHandled):
            self._count("duplicate")
            self.queue_consumer.ack_message(message)
        elif is_temporary(exc_info[1]):
            self._pause(message, event, attempt, pauses + 1, exc_info[1])
        else:
            self._fail(message, attempt, "failed", f"{exc_info[0].__name__}: {exc_info[1]}")
        return result, exc_info

    # -- failure paths ------------------------------------------------------------------------

    def _count(self, outcome):
        self.metrics.inc("closeloop_events_total", "events by handler and outcome", outcome=outcome,
                         handler=self.topology.handler)

    def _pause(self, message, event, attempt, pauses, error, again=None):
        """Hold the message (unacked) and try again later, without using up an attempt. A
        replica whose window is full of held messages takes no more: the consumer pauses.
        `again`: what runs it again (a batch consumer's whole batch); by default the event."""
        delay = pause_after(pauses, self.pause_cap) * random.uniform(0.8, 1.2)
        self._count("deferred")
        level = logging.WARNING if pauses == 1 or delay >= self.pause_cap * 0.8 else logging.DEBUG
        log.log(level, "%s: temporary failure on %s (%s: %s); trying again in %.1fs without using an attempt",
                self.topology.handler, event["event_id"], error.__class__.__name__, str(error)[:200], delay)
        self.waiting += 1
        self._gauge_waiting()

        def later():
            try:
                eventlet.sleep(delay)
            finally:
                self.waiting -= 1
                self._gauge_waiting()
            if message.channel.connection is None:
                return  # the connection dropped meanwhile: the broker delivers the message again
            (again or self._dispatch)(message, event, attempt, pauses)

        # A managed thread: killed when the service stops, leaving the message to the broker.
        self.container.spawn_managed_thread(later, identifier=f"{self.topology.handler}.pause")

    def _gauge_waiting(self):
        self.metrics.set_gauge("closeloop_events_waiting", "messages held back after a temporary failure",
                               self.waiting, handler=self.topology.handler)

    def _fail(self, message, attempt, reason, error):
        """A failure that will repeat: another attempt after a delay, or parked after the last."""
        if attempt >= self.topology.max_attempts:
            return self._park(message, reason, error, attempt)
        delay = self.topology.delays_ms[attempt - 1]
        log.warning("%s failed on attempt %d/%d (%s); retrying in %d ms", self.topology.handler, attempt,
                    self.topology.max_attempts, error[:500], delay)
        if self._side_copy(self.topology.retry_name(delay), message,
                           {f"{H}attempt": attempt + 1, f"{H}error": error[:500]}):
            self._count("retried")

    def _park(self, message, reason: str, error: str, attempt: int):
        log.error("%s parks a message (%s): %s", self.topology.handler, reason, error[:500])
        headers = {f"{H}reason": reason, f"{H}error": error[:1000], f"{H}attempts": attempt,
                   f"{H}failed-at": datetime.now(timezone.utc).isoformat()}
        if self._side_copy(self.topology.dlq_name, message, headers):
            self._count({"failed": "dead_lettered"}.get(reason, reason))

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
            self._count("requeued")
            eventlet.sleep(1)
            self.queue_consumer.requeue_message(message)
            return False
        self.queue_consumer.ack_message(message)
        return True


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


def replay_routes(handlers: list[topology.HandlerTopology]):
    """Where `closeloop dlq replay` sends a parked message: a dead-letter queue's message to
    its handler's queue; an unroutable event to every handler of its type known now."""
    from shared.messaging.dead_letters import UNROUTABLE_SUFFIX

    def routes(parked) -> list[str]:
        if parked.dlq.endswith(".dlq"):
            return [parked.dlq[:-len(".dlq")]]
        source = parked.dlq[:-len(UNROUTABLE_SUFFIX)]
        return [h.queue_name for h in handlers if h.source == source and h.handles(parked.event_type)]
    return routes
