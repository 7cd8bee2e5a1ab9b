"""Errors intake raises to its RPC callers, by the names nameko carries in RemoteError.
Callers turn them back into local errors with `shared.errors.from_remote`."""
from shared.errors import Forbidden, NotFound, Unauthorized, ValidationFailed

RPC_ERRORS = (Unauthorized, NotFound, Forbidden, ValidationFailed)
