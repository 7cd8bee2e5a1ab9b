"""In-memory stand-ins for the unit of work, for service-layer tests of use cases that do not
need PostgreSQL: a handler runs against a FakeStore exactly as against the service's Store,
and the test reads what was committed, published and sent. A service's fake repositories
keep their records in `uow.table(name)`, which commits or rolls back with the unit of work."""
from __future__ import annotations

import copy

from shared.messaging import outbox
from shared.messaging.inbox import AlreadyHandled
from shared.persistence.unit_of_work import UnpublishedEvents
from shared.web.errors import Conflict


class FakeUnitOfWork:
    def __init__(self, store: "FakeStore", claim: tuple[str, str] | None = None):
        self.store = store
        self._claim = claim
        self._seen: list = []
        self.published: list[dict] = []
        self.notified: list = []

    def __enter__(self):
        if self._claim is not None and self._claim in self.store.inbox:
            raise AlreadyHandled(f"{self._claim[0]} already handled event {self._claim[1]}")
        self._tables = copy.deepcopy(self.store.tables)
        self._open()
        return self

    def _open(self) -> None:
        self.idempotency = FakeKeys(self)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return False  # rolled back: nothing of it reaches the store
        if any(a.pending_events() for a in self._seen):
            raise UnpublishedEvents("recorded events not queued for publishing")
        self.store.tables = self._tables
        self.store.published += self.published
        self.store.notified += self.notified
        if self._claim is not None:
            self.store.inbox.add(self._claim)
        self.store.commits += 1
        return False

    def table(self, name: str) -> dict:
        return self._tables.setdefault(name, {})

    def track(self, aggregate):
        self._seen.append(aggregate)
        return aggregate

    def publish(self, envelope: dict) -> None:
        outbox.event_row(envelope)  # the same check as the real outbox: only validated events
        self.published.append(envelope)

    def notify(self, message) -> None:
        self.notified.append(message)


class FakeKeys:
    """Idempotency keys in memory, as shared.persistence.idempotency.Keys behaves."""

    def __init__(self, uow: FakeUnitOfWork):
        self._keys = uow.table("idempotency_keys")

    def lookup(self, principal, key, digest):
        found = self._keys.get((principal, key))
        if found is None or found["status"] is None:
            return None
        if found["digest"] != digest:
            raise Conflict("this Idempotency-Key was used with a different request body",
                           fields={"Idempotency-Key": ["already used for a different request"]})
        return found["status"], copy.deepcopy(found["body"])

    def claim(self, principal, key, digest):
        if (principal, key) in self._keys:
            return self.lookup(principal, key, digest)
        self._keys[(principal, key)] = {"digest": digest, "status": None, "body": None}
        return None

    def record(self, principal, key, status, body):
        self._keys[(principal, key)].update(status=status, body=copy.deepcopy(body))


class FakeStore:
    unit_of_work_class = FakeUnitOfWork

    def __init__(self):
        self.tables: dict[str, dict] = {}
        self.published: list[dict] = []
        self.notified: list = []
        self.inbox: set[tuple[str, str]] = set()
        self.commits = 0

    def unit_of_work(self):
        return self.unit_of_work_class(self)

    def for_event(self, handler: str, event_id: str) -> "_ClaimingStore":
        """The same store, seen by a handler of one event: its unit of work claims the event."""
        return _ClaimingStore(self, (handler, event_id))

    def events(self, event_type: str | None = None) -> list[dict]:
        return [e for e in self.published if event_type is None or e["type"] == event_type]


class _ClaimingStore:
    def __init__(self, store: FakeStore, claim: tuple[str, str]):
        self._store, self._claim, self._claimed = store, claim, False

    def unit_of_work(self):
        if self._claimed:
            raise RuntimeError(f"{self._claim[0]} opened a second unit of work for one event; do the handler's work in one")
        self._claimed = True
        return self._store.unit_of_work_class(self._store, self._claim)

    def __getattr__(self, name):
        return getattr(self._store, name)
