"""Errors intake raises to its RPC callers, by the names nameko carries in RemoteError.
Callers turn them back into local errors with `shared.web.errors.from_remote`. And the
conflicts of its own API with a code of their own."""
from shared.web.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed

RPC_ERRORS = (Unauthorized, NotFound, Forbidden, ValidationFailed)


class NotAnInquiryConflict(Conflict):
    """Only an inquiry is converted into a complaint (one converted already says when)."""
    code = "not_an_inquiry"


class ClosedConflict(Conflict):
    """The inquiry's case is closed."""
    code = "closed"
