"""A record other services hear about (a complaint, a sale, a case, a visit). Its domain
code records plain domain events, numbered per record; the service turns them into
envelopes at its edge (the number is the envelope's `sequence`), and the unit of work
refuses to commit while a recorded event has not been queued for publishing."""
from __future__ import annotations


class Aggregate:
    sequence = 0  # events recorded about this record so far, published or pending

    def record(self, event) -> None:
        self.sequence += 1
        self.__dict__.setdefault("_recorded", []).append((self.sequence, event))

    def pending_events(self) -> list[tuple[int, object]]:
        return list(self.__dict__.get("_recorded", ()))

    def pull_events(self) -> list[tuple[int, object]]:
        """The recorded events, numbered, once: the caller queues them for publishing."""
        return self.__dict__.pop("_recorded", [])
