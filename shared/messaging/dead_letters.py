"""Dead letters: what sits in the handlers' dead-letter queues and in the unroutable-event
queues, listed without consuming it, and replayed to the handlers (`closeloop dlq`).

A replay is bounded: it reads the queue's depth first and looks at no more messages than
that, so a message that fails again and is parked again waits for the next replay instead
of circling for ever. Each copy is mandatory and confirmed; the original is acked only
then, and stays parked when the copy comes back (no queue to take it)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import kombu

from shared.messaging.copies import CopyPublisher, Unroutable
from shared.messaging.topology import HEADER

UNROUTABLE_SUFFIX = ".events.unroutable"


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


def is_unroutable_queue(name: str) -> bool:
    return name.endswith(UNROUTABLE_SUFFIX)


def _text(envelope, key: str) -> str | None:
    """A field of a parked body, if it is a string: a malformed body may hold anything."""
    value = envelope.get(key) if isinstance(envelope, dict) else None
    return value if isinstance(value, str) else None


def _parked(queue: str, message) -> Parked:
    headers = message.headers or {}
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        envelope = None
    event_id, event_type = _text(envelope, "event_id"), _text(envelope, "type")
    try:
        attempts = int(headers.get(f"{HEADER}attempts", 0) or 0)
    except (TypeError, ValueError):
        attempts = 0  # a header we did not write
    unroutable = is_unroutable_queue(queue)
    message_id = message.properties.get("message_id")
    return Parked(dlq=queue, event_id=message_id if isinstance(message_id, str) and message_id else event_id,
                  event_type=(message.delivery_info.get("routing_key") if unroutable
                              else headers.get(f"{HEADER}routing-key")) or event_type,
                  reason="unroutable" if unroutable else str(headers.get(f"{HEADER}reason", "?")),
                  error=("no queue was bound for it when it was published" if unroutable
                         else str(headers.get(f"{HEADER}error", ""))),
                  attempts=attempts,
                  failed_at=str(headers.get(f"{HEADER}failed-at", "")),
                  body_preview=body[:120].decode("utf-8", "replace"))


def list_parked(amqp_uri: str, queues: list[str], limit: int = 1000) -> list[Parked]:
    """What sits in these queues, read without consuming it: messages are fetched
    unacknowledged and return to their queue when the channel closes."""
    found = []
    with kombu.Connection(amqp_uri, connect_timeout=5) as conn:
        for name in queues:
            if not _exists(conn, name):
                continue
            channel = conn.channel()
            try:
                queue = kombu.Queue(name, durable=True, auto_delete=False)(channel)
                while len(found) < limit:
                    message = queue.get(no_ack=False, accept=None)
                    if message is None:
                        break
                    found.append(_parked(name, message))
            finally:
                channel.close()  # unacked messages go back to the queue
    return found


@dataclass
class ReplayReport:
    queue: str
    moved: list[tuple[Parked, list[str]]] = field(default_factory=list)  # with the queues it went to
    kept: list[tuple[Parked, str]] = field(default_factory=list)          # could not go anywhere: why
    skipped: dict[str, int] = field(default_factory=dict)                 # left parked on purpose, by reason


def replay(amqp_uri: str, queue: str, *, routes, event_ids: set[str] | None = None,
           include_malformed: bool = False, reasons: set[str] | None = None) -> ReplayReport:
    """Move parked messages of `queue` back to handlers, with a fresh attempt count.
    `routes(parked)` names the handler queues a message goes to ([] when none exists).
    Malformed messages stay unless `include_malformed`; `event_ids` and `reasons` narrow it."""
    report = ReplayReport(queue)
    with kombu.Connection(amqp_uri, connect_timeout=5) as conn:
        if not _exists(conn, queue):
            return report
        channel = conn.channel()
        publisher = CopyPublisher(amqp_uri)
        try:
            source = kombu.Queue(queue, durable=True, auto_delete=False)(channel)
            depth = source.queue_declare(passive=True).message_count
            for _ in range(depth):  # what was parked when we started, not what comes back meanwhile
                message = source.get(no_ack=False, accept=None)
                if message is None:
                    break
                parked = _parked(queue, message)
                # Left unacked, a message returns to the queue when the channel closes.
                if event_ids is not None and parked.event_id not in event_ids:
                    report.skipped["not selected"] = report.skipped.get("not selected", 0) + 1
                elif reasons is not None and parked.reason not in reasons:
                    report.skipped[parked.reason] = report.skipped.get(parked.reason, 0) + 1
                elif parked.reason == "malformed" and not include_malformed:
                    report.skipped["malformed"] = report.skipped.get("malformed", 0) + 1
                else:
                    targets = routes(parked)
                    why = _copy_to_all(publisher, message, targets) if targets else \
                        f"no handler takes {parked.event_type!r} events"
                    if why is None:
                        message.ack()  # only after the broker confirmed every copy
                        report.moved.append((parked, targets))
                    else:
                        report.kept.append((parked, why))
        finally:
            publisher.close()
            channel.close()
    return report


def _copy_to_all(publisher: CopyPublisher, message, queues: list[str]) -> str | None:
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(HEADER)}
    headers[f"{HEADER}replayed"] = True
    for name in queues:
        try:
            publisher.copy(message, headers, routing_key=name)
        except Unroutable:
            return f"queue {name} does not exist (run `closeloop bus declare`)"
    return None


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
    # Bounded: /metrics asks this, and a broker that went silent must not hang the page.
    with kombu.Connection(amqp_uri, connect_timeout=2,
                          transport_options={"read_timeout": 2, "write_timeout": 2}) as conn:
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
