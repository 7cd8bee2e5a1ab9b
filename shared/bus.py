"""The bus's topology: event exchanges, handler queues, retry queues and dead-letter
queues, named and declared exactly as nameko declares them, plus the `closeloop bus
declare` and `closeloop dlq` operations.

For a handler `<service>.<method>` of `<source>`'s `<type>` events:
- queue `evt-<source>-<type>--<service>.<method>`, bound to `<source>.events` with the
  type as routing key (nameko's SERVICE_POOL queue: durable, no arguments);
- `<queue>.retry.<ms>ms` per retry delay: a message waits there for its TTL, then is
  dead-lettered back to the handler queue through the default exchange;
- `<queue>.dlq`: where a message ends after its last attempt, or at once if malformed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import kombu

from shared.config import SERVICES

DEFAULT_RETRY_DELAYS_MS = (1_000, 5_000, 30_000)
HEADER = "x-closeloop-"


def retry_delays(config: dict | None = None, env=os.environ) -> tuple[int, ...]:
    if config and config.get("EVENT_RETRY_DELAYS_MS"):
        return tuple(int(d) for d in config["EVENT_RETRY_DELAYS_MS"])
    raw = env.get("CLOSELOOP_RETRY_DELAYS_MS")
    return tuple(int(d) for d in raw.split(",")) if raw else DEFAULT_RETRY_DELAYS_MS


def event_exchange(source: str) -> kombu.Exchange:
    # As nameko's get_event_exchange: topic, durable, not auto-delete, persistent.
    return kombu.Exchange(f"{source}.events", type="topic", durable=True, auto_delete=False, delivery_mode=2)


@dataclass(frozen=True)
class HandlerTopology:
    source: str
    event_type: str
    service: str
    method: str
    delays_ms: tuple[int, ...]

    @property
    def handler(self) -> str:
        return f"{self.service}.{self.method}"

    @property
    def queue_name(self) -> str:
        return f"evt-{self.source}-{self.event_type}--{self.service}.{self.method}"

    @property
    def dlq_name(self) -> str:
        return f"{self.queue_name}.dlq"

    def retry_name(self, delay_ms: int) -> str:
        return f"{self.queue_name}.retry.{delay_ms}ms"

    @property
    def max_attempts(self) -> int:
        return len(self.delays_ms) + 1

    def queue(self) -> kombu.Queue:
        # As nameko's EventHandler with SERVICE_POOL and reliable delivery.
        return kombu.Queue(self.queue_name, exchange=event_exchange(self.source), routing_key=self.event_type,
                           durable=True, auto_delete=False, exclusive=False)

    def side_queues(self) -> list[kombu.Queue]:
        queues = [kombu.Queue(self.retry_name(d), durable=True, auto_delete=False, queue_arguments={
            "x-message-ttl": d, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue_name})
            for d in self.delays_ms]
        return queues + [kombu.Queue(self.dlq_name, durable=True, auto_delete=False)]

    def declare(self, channel) -> None:
        self.queue()(channel).declare()
        for queue in self.side_queues():
            queue(channel).declare()


def handlers_of(service_class, delays_ms: tuple[int, ...]) -> list[HandlerTopology]:
    """Every safe event handler a nameko service class defines."""
    from shared.consumer import EventConsumer

    found = []
    for attribute in dir(service_class):
        method = getattr(service_class, attribute, None)
        for entrypoint in getattr(method, "nameko_entrypoints", ()):
            if isinstance(entrypoint, EventConsumer):
                found.append(HandlerTopology(entrypoint.source_service, entrypoint.event_type,
                                             service_class.name, attribute, delays_ms))
    return found


def all_handlers(delays_ms: tuple[int, ...] | None = None) -> list[HandlerTopology]:
    from shared.config import SERVICE_CLASSES, service_class

    delays = delays_ms or retry_delays()
    return [h for name in SERVICE_CLASSES for h in handlers_of(service_class(name), delays)]


def declare(amqp_uri: str, handlers: list[HandlerTopology], sources=SERVICES) -> list[str]:
    """Declare every exchange, handler queue, retry queue and dead-letter queue."""
    declared = []
    with kombu.Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        for source in sorted(set(sources) | {h.source for h in handlers}):
            event_exchange(source)(channel).declare()
            declared.append(f"exchange {source}.events")
        for handler in handlers:
            handler.declare(channel)
            declared.append(f"queue {handler.queue_name} (+{len(handler.delays_ms)} retry, 1 dlq)")
    return declared


# --- dead letters --------------------------------------------------------------------------

@dataclass
class Parked:
    dlq: str
    event_id: str | None
    event_type: str | None
    reason: str
    error: str
    attempts: int
    failed_at: str
    body_preview: str


def _parked(dlq: str, message) -> Parked:
    headers = message.headers or {}
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    try:
        envelope = json.loads(body)
        event_id = envelope.get("event_id") if isinstance(envelope, dict) else None
        event_type = envelope.get("type") if isinstance(envelope, dict) else None
    except (ValueError, RecursionError):
        event_id, event_type = None, None
    return Parked(dlq=dlq, event_id=message.properties.get("message_id") or event_id,
                  event_type=headers.get(f"{HEADER}routing-key") or event_type,
                  reason=str(headers.get(f"{HEADER}reason", "?")), error=str(headers.get(f"{HEADER}error", "")),
                  attempts=int(headers.get(f"{HEADER}attempts", 0)), failed_at=str(headers.get(f"{HEADER}failed-at", "")),
                  body_preview=body[:120].decode("utf-8", "replace"))


def list_parked(amqp_uri: str, dlqs: list[str], limit: int = 1000) -> list[Parked]:
    """What sits in the dead-letter queues, read without consuming it: messages are
    fetched unacknowledged and returned to their queue when the channel closes."""
    found = []
    with kombu.Connection(amqp_uri, connect_timeout=5) as conn:
        for dlq in dlqs:
            if not _exists(conn, dlq):
                continue
            channel = conn.channel()
            try:
                queue = kombu.Queue(dlq, durable=True, auto_delete=False)(channel)
                while len(found) < limit:
                    message = queue.get(no_ack=False, accept=None)
                    if message is None:
                        break
                    found.append(_parked(dlq, message))
            finally:
                channel.close()  # unacked messages go back to the queue
    return found


def replay(amqp_uri: str, handler: HandlerTopology | str, event_ids: set[str] | None = None) -> int:
    """Move parked messages (all, or those with the given event ids) back to their handler
    queue with a fresh attempt count. Returns how many were moved."""
    queue_name = handler.queue_name if isinstance(handler, HandlerTopology) else handler
    dlq = f"{queue_name}.dlq"
    moved = 0
    with kombu.Connection(amqp_uri, connect_timeout=5, transport_options={"confirm_publish": True}) as conn:
        if not _exists(conn, dlq):
            return 0
        channel = conn.channel()
        producer = kombu.Producer(conn.channel())
        try:
            queue = kombu.Queue(dlq, durable=True, auto_delete=False)(channel)
            while True:
                message = queue.get(no_ack=False, accept=None)
                if message is None:
                    break
                parked = _parked(dlq, message)
                if event_ids is not None and parked.event_id not in event_ids:
                    continue  # stays parked: returned to the queue when the channel closes
                headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(HEADER)}
                headers[f"{HEADER}replayed"] = True
                producer.publish(message.body, exchange="", routing_key=queue_name, headers=headers,
                                 content_type=message.content_type or "application/octet-stream",
                                 content_encoding=message.content_encoding or "binary",
                                 message_id=message.properties.get("message_id"), delivery_mode=2,
                                 serializer=None)
                message.ack()  # only after the broker confirmed the copy
                moved += 1
        finally:
            channel.close()
    return moved


def _exists(conn, name: str) -> bool:
    """Whether the queue exists, without creating it (a passive declare)."""
    channel = conn.channel()
    try:
        channel.queue_declare(name, passive=True)
        return True
    except conn.channel_errors:
        return False
    finally:
        try:
            channel.close()
        except Exception:
            pass


def queue_depths(amqp_uri: str, names: list[str]) -> dict[str, int]:
    depths = {}
    with kombu.Connection(amqp_uri, connect_timeout=2) as conn:
        for name in names:
            channel = conn.channel()
            try:
                depths[name] = channel.queue_declare(name, passive=True).message_count
            except Exception:
                depths[name] = -1
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    return depths
