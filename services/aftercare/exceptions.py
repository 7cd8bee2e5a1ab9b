"""What aftercare's domain refuses, turned into HTTP answers in handlers.py (422 and 409)."""


class VisitRuleBroken(Exception):
    """A rule of the visit refused the request (422): `fields` names what is wrong."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.fields = fields or {}


class VisitStateConflict(Exception):
    """The request does not fit the visit's state now (409): finished, or not due yet."""
