"""HTTP for every service: one entrypoint class that authenticates, maps every error to
the JSON error shape, records metrics and carries the correlation id; JSON 404/405 for
unknown paths; JSON body reading with the size and type checks."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

import psycopg2
from nameko.web.handlers import HttpRequestHandler
from sqlalchemy import exc as sa_exc
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.wrappers import Request, Response

from shared.observability import logs
from shared.observability import metrics
from shared.runtime import provider as runtime
from shared.runtime.config import setting
from shared.web import server as transport
from shared.web.errors import (ApiError, MalformedJson, MethodNotAllowed, NotFound,
                           ServiceUnavailable, UnsupportedMediaType, ValidationFailed)

log = logging.getLogger("closeloop.http")
IDENTITY_KEY = "closeloop.identity"
CORRELATION_HEADER = "X-Correlation-Id"
LIVENESS_PATH = "/health/live"


# On every answer that is not a page (the transport's own error answers carry them too).
DATA_HEADERS = transport.DATA_HEADERS


def with_data_headers(response: Response) -> Response:
    if response.mimetype != "text/html":
        for name, value in DATA_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, headers=headers,
                    mimetype="application/json")


def error_response(error: ApiError, headers: dict | None = None) -> Response:
    # ASCII escapes: an error may quote the caller's input, whatever it holds.
    return Response(json.dumps(error.to_body()), status=error.status,
                    headers={**DATA_HEADERS, **error.headers(), **(headers or {})}, mimetype="application/json")


_CORRELATION = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


class JsonWsgiApp(WsgiApp):
    # Runs in the connection's greenthread: a worker is taken only in handle_request.
    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == LIVENESS_PATH and environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            return transport.liveness(environ, start_response)
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except WerkzeugNotFound:
            response = error_response(NotFound(f"no such path: {request.path}"))
        except WerkzeugMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            response = error_response(MethodNotAllowed(f"{request.method} is not allowed here; allowed: {allowed}"),
                                      {"Allow": allowed})
        except HTTPException as exc:  # e.g. a redirect for a trailing slash
            response = exc
        else:
            request.path_values = values
            response = provider.handle_request(request)
        return response(environ, start_response)


class JsonWebServer(transport.AcceptLoop, WebServer):
    """nameko's web server with the transport of shared.web.server (connection cap, strict framing)."""

    def get_wsgi_app(self):
        return JsonWsgiApp(self)

    def get_wsgi_server(self, sock, wsgi_app, protocol=transport.FrontDoorProtocol, debug=False):
        config = self.container.config
        serv = super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)
        serv.socket_timeout = setting(config, "HTTP_SOCKET_TIMEOUT_SECONDS")
        serv.request_timeout = setting(config, "HTTP_REQUEST_TIMEOUT_SECONDS")
        serv.max_body = setting(config, "MAX_BODY_BYTES")
        serv.body_budget = config.get("HTTP_BODY_BUFFER_BYTES") or 32 * serv.max_body
        serv.body_bytes = 0
        self.start_accepting(config)
        return serv

    def context_data_from_headers(self, request):
        # Carried into the worker (and its RPC calls) as nameko context data.
        return {"correlation_id": request.environ.get("closeloop.correlation_id")}


class ApiEndpoint(HttpRequestHandler):
    """`@api("POST", "/v1/complaints")`: the caller's Identity is on the request
    (`identity(request)`) unless the endpoint is `public=True`."""

    server = JsonWebServer()

    def __init__(self, method, url, public: bool = False, **kwargs):
        self.public = public
        # Refusals are answers, not faults: nameko logs them as warnings, not errors.
        kwargs.setdefault("expected_exceptions", ApiError)
        super().__init__(method, url, **kwargs)

    def handle_request(self, request):
        started = time.perf_counter()
        offered = request.headers.get(CORRELATION_HEADER) or ""
        cid = offered if _CORRELATION.match(offered) else str(uuid.uuid4())
        token = logs.correlation_id.set(cid)
        config = self.container.config
        try:
            if not self.public:
                verifier = runtime.verifier(config.get("POLICY_FILE"))
                request.environ[IDENTITY_KEY] = verifier.from_header(request.headers.get("Authorization"))
            request.environ["closeloop.correlation_id"] = cid
            response = super().handle_request(request)
        except ApiError as exc:
            response = error_response(exc)
        except Exception as exc:  # the last line of defence: still the JSON shape, and counted
            response = self.response_from_exception(exc)
        finally:
            logs.correlation_id.reset(token)
        response.headers[CORRELATION_HEADER] = cid
        with_data_headers(response)
        elapsed = time.perf_counter() - started
        registry = metrics.registry(self.container.service_name)
        labels = {"method": request.method, "path": self.url, "status": response.status_code}
        registry.inc("closeloop_http_requests_total", "HTTP requests answered", **labels)
        registry.observe("closeloop_http_request_duration_seconds", "HTTP request latency",
                         elapsed, method=request.method, path=self.url)
        return response

    def response_from_result(self, result):
        if isinstance(result, Response):
            return result
        status, headers = 200, None
        if isinstance(result, tuple):
            if len(result) == 3:
                status, headers, result = result
            else:
                status, result = result
        return json_response(result, status, headers)

    def response_from_exception(self, exc):
        if isinstance(exc, ApiError):
            return error_response(exc)
        # Raw driver errors too: the unit of work sends its queued inserts through psycopg2.
        if isinstance(exc, (sa_exc.DataError, psycopg2.DataError)):
            # a value the database cannot hold slipped past validation
            log.warning("database refused a value in %s %s: %s", self.method, self.url, exc)
            return error_response(ValidationFailed("a value in the request cannot be stored"))
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                            psycopg2.OperationalError, psycopg2.InterfaceError)):
            log.warning("database unavailable in %s %s: %s", self.method, self.url, exc.__class__.__name__)
            return error_response(ServiceUnavailable("the database is unavailable; nothing was stored, "
                                                     "try again shortly", retry_after=2))
        log.error("unhandled error in %s %s", self.method, self.url, exc_info=exc)
        return error_response(ApiError("an internal error occurred; it has been logged"))


api = ApiEndpoint.decorator


def identity(request):
    return request.environ[IDENTITY_KEY]


def correlation_id(request) -> str:
    return request.environ.get("closeloop.correlation_id") or str(uuid.uuid4())


def read_json(request) -> dict:
    """The body as a JSON object: 415 for another content type, 400 if it is not JSON, not an
    object, or nested more than MAX_DEPTH levels. (The transport has already refused a body
    over the limit, 413, and read it whole.)"""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {request.mimetype or 'missing'}")
    raw = request.get_data(cache=False)
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"the body must be UTF-8, not {charset}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedJson("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", fields={"_body": ["must be an object"]})
    bad = _paths_with_bad_text(body)
    if bad:
        raise ValidationFailed("text must be valid Unicode without NUL characters", fields=bad)
    return body


def query_args(request) -> dict:
    """The query string as a dict, refusing values the database cannot hold and parameters
    given twice (which of them would count is a guess)."""
    args = request.args.to_dict()
    repeated = {key: ["given more than once; give it once"] for key, values in request.args.lists()
                if len(values) > 1}
    bad = {**repeated, **_paths_with_bad_text(args)}
    if bad:
        raise ValidationFailed("the query must be valid Unicode without NUL characters", fields=bad)
    return args


def bad_text(text: str) -> str | None:
    """Why PostgreSQL could not store this text (NUL, or a lone surrogate), or None."""
    if "\x00" in text:
        return "must not contain the NUL character (U+0000)"
    if text.isascii():  # the common case: no surrogate possible, nothing to encode
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (a lone surrogate escape is not)"
    return None


# Far deeper than any real request; what is deeper would exhaust the stack of the code
# that walks it (the idempotency hash, the schemas): a 400, never a RecursionError.
MAX_DEPTH = 32


def _paths_with_bad_text(node, prefix: str = "", depth: int = 0) -> dict[str, list[str]]:
    """Every string that PostgreSQL could not store, by path; refuses nesting beyond
    MAX_DEPTH on the same walk (no second pass over the body)."""
    if isinstance(node, str):
        problem = bad_text(node)
        return {prefix or "_body": [problem]} if problem else {}
    if depth >= MAX_DEPTH and isinstance(node, (dict, list)):
        raise ValidationFailed(f"the body is nested more than {MAX_DEPTH} levels deep",
                               fields={prefix or "_body": [f"nested more than {MAX_DEPTH} levels deep"]})
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found: dict[str, list[str]] = {}
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        problem = bad_text(key) if isinstance(key, str) else None
        if problem:
            found[path.encode("utf-8", "backslashreplace").decode()] = [f"field name {problem}"]
            continue
        found.update(_paths_with_bad_text(value, path, depth + 1))
    return found
