"""Errors intake raises to its RPC callers, by the names nameko carries in RemoteError.
Callers turn them back into local errors with `shared.web.errors.from_remote`."""
from shared.web.errors import Forbidden, NotFound, Unauthorized, ValidationFailed

RPC_ERRORS = (Unauthorized, NotFound, Forbidden, ValidationFailed)
