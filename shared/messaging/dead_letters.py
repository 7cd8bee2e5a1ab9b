"""Dead letters: what sits in the handlers' dead-letter queues, listed without consuming it,
and replayed to the handler (`closeloop dlq list|replay`)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import kombu

from shared.messaging.topology import HEADER, HandlerTopology


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
