"""HTML over nameko's HTTP for the console: the `@page` entrypoint (every answer an HTML page with
the security headers, every failure a page without a trace), the session cookie, the browser's
own request (its session and CSRF token) and the answers pages give (HTML, a redirect, an htmx
redirect). Shares the services' web server and transport (shared.web.http), so the console's
/health, /metrics and its pages live on one port."""
from __future__ import annotations

import ipaddress
import logging
import os
import time
import uuid
from urllib.parse import quote

import psycopg2
from sqlalchemy import exc as sa_exc
from werkzeug.wrappers import Response

from services.console import rendering, sessions
from services.console.rendering import N_
from services.console.policy import DEFAULT_LANGUAGE
from services.console.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, LANGUAGE_COOKIE, SAFE_METHODS, Caller
from shared.observability import logs, metrics
from shared.web.errors import ApiError
from shared.web.http import CORRELATION_HEADER, ApiEndpoint, bad_text

log = logging.getLogger("closeloop.console")
LANGUAGE_KEY = "closeloop.console.language"
PROXIES_KEY = "closeloop.console.trusted_proxies"
# A page's own refresh (htmx's `every 30s` polls send it: see the templates' hx-headers). It is
# not the staff member's doing, so it does not keep their session from idling out.
POLL_HEADER = "X-Closeloop-Poll"
# The peers whose X-Forwarded-For and X-Forwarded-Proto are believed (the gateway): addresses or
# networks, comma-separated, in TRUSTED_PROXIES (the config) or CLOSELOOP_TRUSTED_PROXIES. Anyone
# else could name any address: rotate it to dodge the per-address lock, or name a colleague's to
# lock them out.
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1/128"
# The console's own database not answering (a restart, a partition, the pool exhausted).
DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, psycopg2.OperationalError,
                 psycopg2.InterfaceError)
DATABASE_DOWN_MESSAGE = N_("The console cannot reach its database right now. Try again in a moment.")

# Only the console's own origin: its scripts, styles and images, its forms, its htmx requests.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}


class PageError(Exception):
    """A page refused with a status and a message (an English msgid, translated on the page)."""

    def __init__(self, status: int, message: str, fields: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields or {}


class PageEndpoint(ApiEndpoint):
    """`@page("GET", "/")`: public to the transport (the page itself checks the session) and
    answering HTML: a refusal is its error page, a fault a page saying it was logged, with the
    correlation id to quote, never a trace."""

    def __init__(self, method, url, **kwargs):
        # Refusals are answers, not faults: nameko logs them as warnings.
        kwargs.setdefault("expected_exceptions", (ApiError, PageError, sessions.SignInNeeded, sessions.CsrfRefused,
                                                  *DATABASE_DOWN))
        super().__init__(method, url, public=True, **kwargs)

    def setup(self):
        super().setup()
        self.trusted_proxies = trusted_proxies(self.container.config)

    def handle_request(self, request):
        started = time.perf_counter()
        offered = request.headers.get(CORRELATION_HEADER) or ""
        cid = offered if 0 < len(offered) <= 100 and offered.replace("-", "").isalnum() else str(uuid.uuid4())
        token = logs.correlation_id.set(cid)
        request.environ["closeloop.correlation_id"] = cid
        request.environ[PROXIES_KEY] = self.trusted_proxies
        try:
            response = super(ApiEndpoint, self).handle_request(request)  # nameko's: spawn the worker, wait
        except Exception as exc:  # noqa: BLE001 - a page, whatever failed
            response = self.response_from_exception(exc)
        finally:
            logs.correlation_id.reset(token)
        response = self._finish(request, response, cid)
        registry = metrics.registry(self.container.service_name)
        registry.inc("closeloop_http_requests_total", "HTTP requests answered", method=request.method,
                     path=self.url, status=response.status_code)
        registry.observe("closeloop_http_request_duration_seconds", "HTTP request latency",
                         time.perf_counter() - started, method=request.method, path=self.url)
        return response

    def _finish(self, request, response, cid):
        if getattr(response, "_closeloop_error", False):
            retry_after = response.headers.get("Retry-After")
            response = error_page(response.status_code, response._closeloop_message,
                                  request.environ.get(LANGUAGE_KEY, DEFAULT_LANGUAGE), cid,
                                  fields=response._closeloop_fields)
            if retry_after:
                response.headers["Retry-After"] = retry_after
        response.headers[CORRELATION_HEADER] = cid
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def response_from_result(self, result):
        if isinstance(result, Response):
            return result
        raise TypeError(f"a page must answer a Response, not {type(result).__name__}")

    def response_from_exception(self, exc):
        if isinstance(exc, sessions.SignInNeeded):
            return sign_in_redirect(exc)
        if isinstance(exc, sessions.CsrfRefused):
            return _marked(403, N_("The form has expired or did not come from this console. Reload the page and "
                                "try again."))
        if isinstance(exc, PageError):
            return _marked(exc.status, exc.message, exc.fields)
        if isinstance(exc, ApiError) and exc.status < 500:
            return _marked(exc.status, N_("The request is invalid."), exc.fields)
        if isinstance(exc, DATABASE_DOWN):
            log.warning("database unavailable in %s %s: %s", self.method, self.url, exc.__class__.__name__)
            response = _marked(503, DATABASE_DOWN_MESSAGE)
            response.headers["Retry-After"] = "5"
            return response
        log.error("unhandled error in %s %s", self.method, self.url, exc_info=exc)
        return _marked(500, N_("Something went wrong on our side. It has been logged; please try again."))


page = PageEndpoint.decorator


def _marked(status: int, message: str, fields: dict | None = None) -> Response:
    """A placeholder the endpoint turns into the error page (it knows the language and the id)."""
    response = Response(status=status)
    response._closeloop_error, response._closeloop_message, response._closeloop_fields = True, message, fields or {}
    return response


def error_page(status: int, message: str, language: str, correlation_id: str, fields: dict | None = None) -> Response:
    body = rendering.render("error.html", language, status=status, message=message, fields=fields or {},
                            correlation_id=correlation_id, staff=None, csrf_token="")
    return Response(body, status=status, mimetype="text/html")


# -- the browser's request -------------------------------------------------------------------------

def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def is_poll(request) -> bool:
    """A page refreshing itself (htmx's poll), not something the staff member did."""
    return is_htmx(request) and request.method in SAFE_METHODS and request.headers.get(POLL_HEADER) == "true"


def trusted_proxies(config: dict, env=os.environ) -> tuple:
    """The networks of TRUSTED_PROXIES (the config), else CLOSELOOP_TRUSTED_PROXIES, else loopback."""
    given = config.get("TRUSTED_PROXIES") or env.get("CLOSELOOP_TRUSTED_PROXIES") or DEFAULT_TRUSTED_PROXIES
    networks = []
    for part in str(given).split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: {part.strip()!r} is not an address or a network") from None
    return tuple(networks)


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(address, networks) -> bool:
    return address is not None and any(address.version == n.version and address in n for n in networks)


def _proxies(request) -> tuple:
    networks = request.environ.get(PROXIES_KEY)  # the endpoint's, from its config
    return trusted_proxies({}) if networks is None else networks


def _from_proxy(request) -> bool:
    return _trusted(_address(request.remote_addr or ""), _proxies(request))


def behind_tls(request) -> bool:
    """TLS ends at the gateway, which says so in X-Forwarded-Proto (believed from it only)."""
    scheme = request.headers.get("X-Forwarded-Proto", "") if _from_proxy(request) else ""
    return (scheme or request.scheme).split(",")[0].strip().lower() == "https"


def client_address(request) -> str:
    """The socket's peer; behind a trusted proxy (the gateway, which replaces X-Forwarded-For
    with its caller's address: gateway/closeloop.conf), the nearest address in X-Forwarded-For
    that is not a trusted proxy. What another peer says in X-Forwarded-For is ignored."""
    peer = request.remote_addr or "unknown"
    if not _from_proxy(request):
        return peer[:64]
    networks = _proxies(request)
    found = peer
    for hop in reversed(request.headers.get("X-Forwarded-For", "").split(",")):
        address = _address(hop)
        if address is None:
            break
        found = str(address)
        if not _trusted(address, networks):
            break
    return found[:64]


def form(request) -> dict[str, str]:
    """The posted form as single values; a field given twice, or text the database cannot hold,
    is a 400 naming it."""
    problems = {}
    values = {}
    for key, given in request.form.lists():
        if len(given) > 1:
            problems[key] = ["given more than once"]
            continue
        why = bad_text(key) or bad_text(given[0])
        if why:
            problems[key] = [why]
        values[key] = given[0]
    if problems:
        raise PageError(400, N_("The form is invalid."), problems)
    return values


def offered_csrf(request, values: dict | None = None) -> str | None:
    return request.headers.get(CSRF_HEADER) or (values or {}).get(CSRF_FIELD)


def open_caller(store, request, now, *, staff_required: bool = True, values: dict | None = None) -> Caller:
    """The request's browser: its session loaded and checked (ended sessions deleted, committed),
    then: no signed-in staff member where one is needed -> SignInNeeded; a state-changing method
    without the session's CSRF token -> CsrfRefused (403). A browser without a session cookie
    costs the database nothing; a pooled connection the database dropped (it restarted) is
    replaced and the read tried once more, so a restart costs no page."""
    raw, language = request.cookies.get(COOKIE), request.cookies.get(LANGUAGE_COOKIE)
    if not sessions.well_formed(raw):
        caller = sessions.load(None, raw, now, language=language)
    else:
        for attempt in (1, 2):
            try:
                with store.unit_of_work() as uow:
                    caller = sessions.load(uow, raw, now, language=language, background=is_poll(request))
                break
            except sa_exc.DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
    request.environ[LANGUAGE_KEY] = caller.language
    if staff_required and caller.staff is None:
        raise sessions.SignInNeeded(caller.ended, htmx=is_htmx(request), secure=behind_tls(request))
    if request.method not in SAFE_METHODS:
        sessions.check_csrf(caller, offered_csrf(request, values))
    return caller


# -- answers ----------------------------------------------------------------------------------------

def set_cookie(response: Response, caller: Caller, secure: bool) -> Response:
    if caller.new_cookie:
        response.set_cookie(COOKIE, caller.new_cookie, httponly=True, samesite="Lax", secure=secure, path="/")
    elif caller.clear_cookie:
        response.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=secure, path="/")
    if caller.new_language:
        response.set_cookie(LANGUAGE_COOKIE, caller.new_language, max_age=365 * 24 * 3600, httponly=True,
                            samesite="Lax", secure=secure, path="/")
    return response


def html(request, caller: Caller, template: str, status: int = 200, **context) -> Response:
    body = rendering.render(template, caller.language, staff=caller.staff, csrf_token=caller.csrf_token,
                            **context)
    return set_cookie(Response(body, status=status, mimetype="text/html"), caller, behind_tls(request))


def redirect(request, caller: Caller, location: str) -> Response:
    """After a POST: 303 to a page (an htmx request is told with HX-Redirect instead)."""
    if is_htmx(request):
        response = Response(status=200, headers={"HX-Redirect": location})
    else:
        response = Response(status=303, headers={"Location": location})
    return set_cookie(response, caller, behind_tls(request))


def sign_in_redirect(exc: "sessions.SignInNeeded") -> Response:
    location = "/login" + (f"?ended={quote(exc.why)}" if exc.why else "")
    if exc.htmx:  # a poll from a page whose session ended: the whole page goes to the sign-in form
        response = Response(status=200, headers={"HX-Redirect": location})
    else:
        response = Response(status=303, headers={"Location": location})
    if exc.why:
        response.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=exc.secure, path="/")
    return response


def safe_next(target: str | None) -> str:
    """A path on this console to go back to (never another origin: //host or a scheme). Nothing
    but printable ASCII: browsers drop tabs and line breaks from a URL (`/<TAB>/evil.example` is
    `//evil.example`), and a line break in a header is a header of its own."""
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target or len(target) > 500
            or not all("!" <= ch <= "~" for ch in target)):
        return "/"
    return target
