"""The four services' public APIs, called with the signed-in staff member's own identity.

Each call carries a token the console signs for the staff member (role, scope, their login as
subject) with the private key `closeloop token issue` uses; it lives 5 minutes and is cached per
session until a minute before its end, so a disabled staff member's calls stop within minutes
even in a tab that never reloads, and the services keep holding only the public key.

A service's refusal comes back as ServiceRefused with its status, code and per-field errors (the
JSON shape of shared.web.errors), for a form to show each beside its field; a service that does
not answer in time, or answers garbage, is ServiceDown.

A call takes `service_timeout_seconds` at most in all, its answer read to the end (requests' own
timeout bounds each read only: an answer trickling a byte a second would hold the page, and one of
the console's few workers, for as long as it lasts), and an answer may be
`service_answer_max_bytes` at most. A service that did not answer in time rests for
`service_rest_seconds`: calls to it fail at once meanwhile, so a hung service costs its own pages
a moment each, not every worker of the console. A call given a shorter deadline (what a page can
do without: a summary beside its own record) that passes it rests only such calls: a service
slower than an aside's deadline but within a page's still serves its own pages.

A file (reporting's exports) is not read whole: `download` answers its head and an iterator over
its body, passed on to the browser a chunk at a time (constant memory, however large). Its head
is waited for `export_wait_seconds` (a workbook is built before its first byte is sent), then each
read of the body `service_timeout_seconds`, however long the whole takes; a body that goes quiet
longer, or breaks, is DownloadCut, which ends the browser's download unfinished (never a file
that looks whole but is short)."""
from __future__ import annotations

import json as _json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import eventlet
import requests
import urllib3

from services.console.policy import RULES
from services.console.repository import StaffMember
from shared.runtime.config import HTTP_PORTS
from shared.security import auth

log = logging.getLogger("closeloop.console")
SERVICES = ("intake", "investigation", "aftercare", "reporting")


def base_urls(config: dict, env=os.environ) -> dict[str, str]:
    """INTAKE_URL, INVESTIGATION_URL, AFTERCARE_URL, REPORTING_URL from the service's config, else
    the environment, else the local defaults of `make dev` (http://127.0.0.1:800N)."""
    urls = {}
    for name in SERVICES:
        key = f"{name.upper()}_URL"
        urls[name] = (config.get(key) or env.get(key) or f"http://127.0.0.1:{HTTP_PORTS[name]}").rstrip("/")
    return urls


class ServiceRefused(Exception):
    """A service answered 4xx: `fields` maps each wrong field (as the API names it) to its messages."""

    def __init__(self, service: str, status: int, code: str, message: str, fields: dict | None = None):
        super().__init__(f"{service}: {status} {code}: {message}")
        self.service, self.status, self.code, self.message = service, status, code, message
        self.fields = {str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in (fields or {}).items()}


class ServiceDown(Exception):
    """A service did not answer in time, could not be reached, or answered 5xx or non-JSON."""

    def __init__(self, service: str, why: str):
        super().__init__(f"{service}: {why}")
        self.service, self.why = service, why


class StaffTokens:
    """Short-lived tokens per session, made when missing or near their end. Time is the system's:
    the services check expiry against their own real clocks, whatever clock the console runs on."""

    def __init__(self, rules=RULES.tokens, private_key: bytes | None = None):
        self._rules = rules
        self._key = private_key
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def for_session(self, session_id_hash: str, member: StaffMember) -> str:
        now = time.time()
        with self._lock:
            cached = self._cache.get(session_id_hash)
            if cached is not None and cached[0] - self._rules.renew_before.total_seconds() > now:
                return cached[1]
        if self._key is None:
            self._key = auth.load_private_key()
        token = auth.issue_token(role=member.role, subject=member.login, ttl=self._rules.ttl,
                                 private_key=self._key, now=datetime.fromtimestamp(now, timezone.utc),
                                 **member.token_scope())
        with self._lock:
            if len(self._cache) > 10_000:  # sessions that ended without saying so
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[session_id_hash] = (now + self._rules.ttl.total_seconds(), token)
        return token

    def forget(self, session_id_hash: str) -> None:
        with self._lock:
            self._cache.pop(session_id_hash, None)


class DownloadCut(Exception):
    """A file's body stopped part way: the service was quiet longer than a read's deadline, or the
    connection broke. Raised into the console's own answer, whose connection then ends without the
    body's end, so the browser says the download failed."""


class _Late(Exception):
    """The call's whole deadline passed (raised into it by an eventlet timeout)."""


def _timed_out(exc: requests.RequestException) -> bool:
    """requests' own timeout, also when it struck while the body was read (requests reports that
    as a ConnectionError around urllib3's ReadTimeoutError)."""
    return isinstance(exc, requests.Timeout) or any(isinstance(arg, urllib3.exceptions.ReadTimeoutError)
                                                   for arg in exc.args)


@dataclass
class ServiceClient:
    name: str
    base_url: str
    timeout: float = RULES.service_timeout_seconds
    rest: float = RULES.service_rest_seconds
    max_bytes: int = RULES.service_answer_max_bytes
    wait: float = RULES.export_wait_seconds  # a file's head (download)

    def __post_init__(self):
        self._http = requests.Session()
        self._resting_until = 0.0  # time.monotonic(): not asked until then (it did not answer in time)
        self._asides_resting_until = 0.0  # the same for calls with a shorter deadline (an aside missed it)

    def call(self, method: str, path: str, token: str, *, params: dict | None = None, json: dict | None = None,
             correlation_id: str | None = None, headers: dict | None = None, timeout: float | None = None) -> dict:
        """`timeout`: a shorter deadline than the client's, for what a page can do without (a
        summary beside the page's own record): it waits that long at most, then goes without."""
        headers = {**(headers or {}), "Authorization": f"Bearer {token}", "Accept": "application/json"}
        if correlation_id:
            headers["X-Correlation-Id"] = correlation_id
        limit = min(timeout, self.timeout) if timeout else self.timeout
        aside = limit < self.timeout
        if time.monotonic() < (max(self._resting_until, self._asides_resting_until) if aside else self._resting_until):
            raise ServiceDown(self.name, "no answer in time a moment ago; not asked again yet")
        try:
            with eventlet.Timeout(limit, _Late):
                status, raw = self._exchange(method, path, params=params, json=json, headers=headers, timeout=limit)
        except requests.RequestException as exc:
            if not _timed_out(exc):
                raise ServiceDown(self.name, f"unreachable ({exc.__class__.__name__})") from None
            self._rest(aside)
            raise ServiceDown(self.name, f"no answer within {limit:g} s") from None
        except _Late:
            self._rest(aside)
            raise ServiceDown(self.name, f"no answer within {limit:g} s") from None
        return self._body(status, raw)

    def _rest(self, aside: bool) -> None:
        """Not asked for `rest` s: by any call, or (an aside's deadline missed) by asides only."""
        if aside:
            self._asides_resting_until = time.monotonic() + self.rest
        else:
            self._resting_until = time.monotonic() + self.rest

    def _body(self, status: int, raw: bytes | None) -> dict:
        """An answer's JSON object; a refusal ServiceRefused, anything else odd ServiceDown."""
        if raw is None:
            raise ServiceDown(self.name, f"answered {status} with more than {self.max_bytes} bytes")
        try:
            body = _json.loads(raw)
        except (ValueError, RecursionError):
            raise ServiceDown(self.name, f"answered {status} without JSON") from None
        if status >= 500:
            raise ServiceDown(self.name, f"answered {status}")
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            error = error if isinstance(error, dict) else {}
            fields = error.get("fields") if isinstance(error.get("fields"), dict) else {}
            raise ServiceRefused(self.name, status, str(error.get("code", "refused")),
                                 str(error.get("message", "")), fields)
        if not isinstance(body, dict):
            raise ServiceDown(self.name, "answered JSON that is not an object")
        return body

    def _exchange(self, method: str, path: str, timeout: float, **kwargs) -> tuple[int, bytes | None]:
        """(the status, the body read in full; None: over `max_bytes`, the rest not read)."""
        answer = self._http.request(method, self.base_url + path, timeout=timeout, stream=True, **kwargs)
        return answer.status_code, self._read(answer)

    def _read(self, answer: requests.Response) -> bytes | None:
        """The body in full; None: over `max_bytes`, the rest not read."""
        done = False
        try:
            body = bytearray()
            for chunk in answer.iter_content(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    return None
            done = True
            return bytes(body)
        finally:
            if not done:  # a connection with an answer half read is not used again
                answer.close()

    def download(self, path: str, token: str, *, params: dict | None = None,
                 correlation_id: str | None = None) -> "Download":
        """A GET whose answer is a file, its body not read yet: the head waited for `wait` s at
        most, then each read of the body `timeout` s (Download). A refusal is ServiceRefused and
        a service away ServiceDown, as for `call`; a slow head does not rest the service (a large
        workbook takes its time), but a resting service is not asked."""
        headers = {"Authorization": f"Bearer {token}"}
        if correlation_id:
            headers["X-Correlation-Id"] = correlation_id
        if time.monotonic() < self._resting_until:
            raise ServiceDown(self.name, "no answer in time a moment ago; not asked again yet")
        try:
            with eventlet.Timeout(self.wait, _Late):
                answer = self._http.get(self.base_url + path, params=params, headers=headers, stream=True,
                                        allow_redirects=False, timeout=(self.timeout, self.wait))
        except requests.RequestException as exc:
            why = f"no answer within {self.wait:g} s" if _timed_out(exc) else f"unreachable ({exc.__class__.__name__})"
            raise ServiceDown(self.name, why) from None
        except _Late:
            raise ServiceDown(self.name, f"no answer within {self.wait:g} s") from None
        status = answer.status_code
        if 200 <= status < 300:
            return Download(self.name, answer, self.timeout)
        try:  # a refusal: its JSON, read as a call's
            with eventlet.Timeout(self.timeout, _Late):
                raw = self._read(answer)
        except (requests.RequestException, _Late):
            answer.close()
            raise ServiceDown(self.name, f"answered {status}, its body not read in time") from None
        if status >= 400:
            self._body(status, raw)  # raises: a 4xx is ServiceRefused, a 5xx ServiceDown
        raise ServiceDown(self.name, f"answered {status}")  # a redirect

    def get(self, path: str, token: str, *, timeout: float | None = None, **params) -> dict:
        return self.call("GET", path, token, params={k: v for k, v in params.items() if v is not None},
                         timeout=timeout)

    def post(self, path: str, token: str, body: dict, correlation_id: str | None = None) -> dict:
        """A POST in the body (a read whose words must stay out of the URL, or a task's form)."""
        return self.call("POST", path, token, json=body, correlation_id=correlation_id)

    def delete(self, path: str, token: str) -> dict:
        """A DELETE (the service answers what is left, as JSON)."""
        return self.call("DELETE", path, token)

    def post_once(self, path: str, token: str, body: dict, idempotency_key: str,
                  correlation_id: str | None = None) -> dict:
        """A POST with an `Idempotency-Key`: sent again with the same key and body (a double
        click, a retry), the service answers its first answer instead of creating twice."""
        return self.call("POST", path, token, json=body, correlation_id=correlation_id,
                         headers={"Idempotency-Key": idempotency_key})


class Download:
    """A file a service answers, as it comes: `headers`, and its body's chunks when iterated, each
    read given `read_timeout` s (DownloadCut past it, or when the connection breaks). Closed at its
    end, or by whoever stops reading early (the WSGI server calls `close`)."""

    CHUNK = 64 * 1024

    def __init__(self, service: str, answer: requests.Response, read_timeout: float):
        self.service, self.read_timeout = service, read_timeout
        self.headers = answer.headers
        self._answer = answer

    def __iter__(self):
        raw = self._answer.raw
        try:
            while True:
                try:  # read1: what has come, up to CHUNK (read() would wait for a whole CHUNK)
                    with eventlet.Timeout(self.read_timeout, _Late):
                        chunk = raw.read1(self.CHUNK, decode_content=True)
                except _Late:
                    self._cut(f"nothing more within {self.read_timeout:g} s")
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    self._cut(f"the body broke off ({exc.__class__.__name__})")
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def _cut(self, why: str):
        log.warning("a download from %s ended unfinished: %s", self.service, why)
        raise DownloadCut(f"{self.service}: {why}") from None

    def close(self) -> None:
        self._answer.close()


class Services:
    """`services.investigation.get("/v1/tasks", token)`; one client (and connection pool) a service."""

    def __init__(self, urls: dict[str, str], timeout: float = RULES.service_timeout_seconds,
                 rest: float = RULES.service_rest_seconds, wait: float = RULES.export_wait_seconds):
        for name in SERVICES:
            setattr(self, name, ServiceClient(name, urls[name], timeout, rest, wait=wait))

    def awake(self) -> None:
        """Every service asked again at the next call, resting or not."""
        for name in SERVICES:
            getattr(self, name)._resting_until = getattr(self, name)._asides_resting_until = 0.0
