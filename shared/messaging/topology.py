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

from shared.runtime.config import SERVICES

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
