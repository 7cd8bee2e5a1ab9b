"""The errors a request can end in, each with its HTTP status and JSON code.

Services raise these from the domain or the entrypoint; shared.web.http turns them into
`{"error": {"code", "message", "fields"}}` in one place.
"""
from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str | None = None, *, fields: dict | None = None,
                 retry_after: float | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.fields = fields or {}
        # whole seconds, rounded up: when the caller may try again (Retry-After), if it is known
        self.retry_after = None if retry_after is None else max(1, int(-(-retry_after // 1)))

    def headers(self) -> dict:
        """Response headers this error needs."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def to_body(self) -> dict:
        body = {"error": {"code": self.code, "message": self.message, "fields": self.fields}}
        if self.retry_after is not None:
            body["error"]["retry_after"] = self.retry_after
        return body


class Unauthorized(ApiError):
    """A valid bearer token is required."""
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    """Not found."""
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    """This path does not accept that method."""
    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    """The request conflicts with the current state."""
    status, code = 409, "conflict"


class Forbidden(ApiError):
    """Your role may not do this."""
    status, code = 403, "forbidden"


class ValidationFailed(ApiError):
    """The request is invalid."""
    status, code = 400, "invalid_request"


class MalformedJson(ApiError):
    """The body is not valid JSON."""
    status, code = 400, "malformed_json"


class PayloadTooLarge(ApiError):
    """The body is larger than allowed."""
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    """The body must be JSON (Content-Type: application/json)."""
    status, code = 415, "unsupported_media_type"


class RuleRefused(ApiError):
    """A business rule refused the request."""
    status, code = 422, "rule_refused"


def branch_gone(code: str) -> RuleRefused:
    """Work on a record of a branch the chain policy no longer has (its hours, its region gone):
    refused, the record still readable."""
    return RuleRefused(f"branch {code} is no longer in the chain policy",
                       fields={"branch_code": ["not a branch of the chain policy"]})


class TooManyRequests(ApiError):
    """Too many requests; try again after Retry-After seconds."""
    status, code = 429, "too_many_requests"

    def __init__(self, message: str | None = None, *, retry_after: float, fields: dict | None = None):
        if retry_after is None:
            raise TypeError("a 429 must say when to try again")
        super().__init__(message, fields=fields, retry_after=retry_after)


class ServiceUnavailable(ApiError):
    """A dependency is unavailable; try again shortly."""
    status, code = 503, "unavailable"


_BY_NAME = {cls.__name__: cls for cls in (Unauthorized, NotFound, Conflict, Forbidden, ValidationFailed,
                                           RuleRefused, ServiceUnavailable)}


def from_remote(remote_error) -> ApiError:
    """A nameko RemoteError from another service as the local error it stands for."""
    cls = _BY_NAME.get(getattr(remote_error, "exc_type", None), ServiceUnavailable)
    return cls(str(getattr(remote_error, "value", remote_error)))
