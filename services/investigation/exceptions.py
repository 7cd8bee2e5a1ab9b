"""Errors investigation raises to its RPC callers, by the names nameko carries in RemoteError.
It serves no RPC yet (the archive's contact comes from intake); callers of a later one turn
these back into local errors with `shared.web.errors.from_remote`."""
from shared.web.errors import Forbidden, NotFound, Unauthorized, ValidationFailed

RPC_ERRORS = (Unauthorized, NotFound, Forbidden, ValidationFailed)
