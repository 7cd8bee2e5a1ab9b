"""What investigation's domain refuses, turned into HTTP answers in handlers.py (422 and 409).
It serves no RPC yet; a later RPC lists here what it raises, as services/intake/exceptions.py does."""


class CaseRuleBroken(Exception):
    """A rule of the case refused the request (422): `fields` names what is wrong."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.fields = fields or {}


class CaseStateConflict(Exception):
    """The request does not fit the case's state now (409)."""
