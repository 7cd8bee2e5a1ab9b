"""Consuming every event of a source in batches: `@handle_all(source, ...)` for a projection
(reporting's) that wants all of a producer's events and thousands of them a second.

- One queue per source, `evt-<source>-all--<service>.<method>`, bound to `<source>.events`
  with `#`, with the same retry and dead-letter queues as a single-type handler (topology.ALL).
- Messages are decoded one by one as `handle_event` does (a malformed one is parked at once)
  and collected; a worker gets the list when `batch` have arrived or `wait_ms` after the first,
  so one transaction commits many events. Each message is acked after its batch committed.
- A batch that fails for a temporary reason (database away, deadlock) is held and tried again
  whole without using an attempt. A batch that fails otherwise is split: each event goes
  through the handler alone, so one bad event is retried and parked by itself and the others
  commit.
- No inbox claim: the handler is idempotent on event ids itself (reporting's event log).
"""
from __future__ import annotations

import time
from functools import partial

import eventlet
from nameko.exceptions import ContainerBeingKilled

from shared.messaging import topology
from shared.messaging.consumer import EventConsumer
from shared.messaging.failures import is_temporary

# 500: reporting's batches also add to the KPI cells; at 250 one process folds about 1,700 events a
# second, at 500 about 2,100 (README, Benchmarks). A quiet bus still flushes after 100 ms.
DEFAULT_BATCH, DEFAULT_WAIT_MS = 500, 100


class BatchEventConsumer(EventConsumer):
    claims_inbox = False  # the handler dedupes by event id itself; shared.persistence reads this

    def __init__(self, source_service: str, batch: int = DEFAULT_BATCH, wait_ms: int = DEFAULT_WAIT_MS, **kwargs):
        super().__init__(source_service, topology.ALL, **kwargs)
        self.batch_size, self.wait = batch, wait_ms / 1000

    def setup(self):
        super().setup()
        self.batch_size = int(self.container.config.get("EVENT_BATCH") or self.batch_size)
        self._pending: list[tuple] = []  # (message, event, attempt) waiting for their batch
        self._timer = None

    # -- arrival: decoded one by one, collected ----------------------------------------------

    def handle_raw(self, message):
        decoded = self._decode(message)
        if decoded is None:
            return
        self._pending.append((message, *decoded))
        if len(self._pending) >= self.batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = self.container.spawn_managed_thread(self._flush_later,
                                                              identifier=f"{self.topology.handler}.batch")

    def _unexpected(self, event) -> str | None:
        if event["source"] != self.source_service:
            return f"a {event['source']} event in the queue of {self.source_service} events"
        return None

    def _flush_later(self):
        try:
            eventlet.sleep(self.wait)
        finally:
            self._timer = None
        self._flush()

    def _flush(self):
        items, self._pending = self._pending, []
        if items:
            self._run(items, pauses=0)

    # -- a batch's run and its result -------------------------------------------------------------

    def _run(self, items: list[tuple], pauses: int):
        started = time.perf_counter()
        try:
            self.container.spawn_worker(self, ([event for _, event, _ in items],), {},
                                        handle_result=partial(self._batch_result, items, pauses, started))
        except ContainerBeingKilled:
            for message, _, _ in items:
                self.queue_consumer.requeue_message(message)

    def _batch_result(self, items, pauses, started, worker_ctx, result=None, exc_info=None):
        self.metrics.observe("closeloop_event_batch_duration_seconds", "event batch latency",
                             time.perf_counter() - started, handler=self.topology.handler)
        if exc_info is None:
            for message, _, _ in items:
                self.queue_consumer.ack_message(message)
            self.metrics.inc("closeloop_events_total", "events by handler and outcome", len(items),
                             outcome="handled", handler=self.topology.handler)
        elif is_temporary(exc_info[1]):
            self._hold(items, pauses + 1, exc_info[1])
        elif len(items) > 1:
            for item in items:  # alone, so that only the bad one is retried and parked
                self._run([item], pauses=0)
        else:
            message, _, attempt = items[0]
            self._fail(message, attempt, "failed", f"{exc_info[0].__name__}: {exc_info[1]}")
        return result, exc_info

    def _hold(self, items, pauses, error):
        """The batch stays unacked and runs again whole after a back-off, using no attempt."""
        message, event, _ = items[0]
        self._pause(message, event, 0, pauses, error, again=lambda *_: self._run(items, pauses))


def handle_all(source_service: str, batch: int = DEFAULT_BATCH, wait_ms: int = DEFAULT_WAIT_MS):
    """Every event `source_service` publishes, in batches, to a method taking a list of envelopes."""
    return BatchEventConsumer.decorator(source_service, batch=batch, wait_ms=wait_ms)
