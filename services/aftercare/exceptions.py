"""What aftercare's domain refuses, turned into HTTP answers in handlers.py (422 and 409)."""
from shared.calendar.clock import isoformat


class VisitRuleBroken(Exception):
    """A rule of the visit refused the request (422): `fields` names what is wrong."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.fields = fields or {}


class VisitStateConflict(Exception):
    """The request does not fit the visit's state now (409): finished, or not due yet."""


class VisitClaimed(VisitStateConflict):
    """A colleague works the visit now (409): `by` (their staff subject) until `until`."""

    def __init__(self, visit_id: str, by: str, until):
        super().__init__(f"visit {visit_id} is being called by {by} until {isoformat(until)}")
        self.by, self.until = by, until
