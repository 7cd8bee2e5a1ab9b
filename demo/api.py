"""The demo's calls to the services' public HTTP APIs, each service at its own URL or every call
through the gateway, with tokens signed as `closeloop token issue` signs them (the development
keys). A service that cannot be reached, or answers what the demo did not expect, is a DemoError:
one line naming it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import requests

from shared.security import auth

SERVICES = ("intake", "investigation", "aftercare")
RESENT_STATUSES = (502, 503, 504)  # nothing stored (503), or the gateway found no replica


class DemoError(Exception):
    """What stops the demo: said in one line, exit status 2."""


@dataclass(frozen=True)
class Person:
    """Someone in the chain, as a token: a subject, a role and a scope (a branch, '*' or a region)."""

    subject: str
    role: str
    branch: str | None = None
    region: str | None = None


class Api:
    """`patience`: how long a call is retried while its service is away (503, no connection),
    and how long `wait_for` waits for work to be visible."""

    def __init__(self, urls: dict[str, str], gateway: str | None = None, patience: float = 60.0):
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.gateway = gateway.rstrip("/") if gateway else None
        self.patience = patience
        self.session = requests.Session()
        self.calls, self.waited = 0, 0.0  # calls made; seconds spent waiting for work to show
        self._tokens: dict[Person, str] = {}

    def where(self, service: str) -> str:
        return f"the gateway at {self.gateway}" if self.gateway else self.urls[service]

    def health(self, service: str) -> tuple[int, dict]:
        """The service's readiness (through the gateway: /health/<service>)."""
        url = f"{self.gateway}/health/{service}" if self.gateway else f"{self.urls[service]}/health/ready"
        try:
            answer = self.session.get(url, timeout=10)
        except requests.RequestException as exc:
            raise DemoError(f"{service} is not reachable at {url} ({exc.__class__.__name__}): start it first "
                            f"(make dev DEV_ARGS=--demo-clock)") from None
        return answer.status_code, _json(answer)

    def token(self, person: Person) -> str:
        if person not in self._tokens:
            self._tokens[person] = auth.issue_token(role=person.role, subject=person.subject, branch=person.branch,
                                                    region=person.region, ttl=timedelta(hours=12))
        return self._tokens[person]

    def call(self, service: str, method: str, path: str, who: Person, *, body: dict | None = None,
             params: dict | None = None, key: str | None = None, accept=(200, 201)) -> tuple[int, dict]:
        """(status, body) of a call whose status is in `accept`. A GET, or a POST with an
        Idempotency-Key, is sent again while the service is away; any other call only after a
        503 (nothing was stored)."""
        url = f"{self.gateway or self.urls[service]}{path}"
        headers = {"Authorization": f"Bearer {self.token(who)}"}
        if key:
            headers["Idempotency-Key"] = key
        resend = method == "GET" or key is not None
        deadline = time.monotonic() + self.patience
        while True:
            self.calls += 1
            try:
                answer = self.session.request(method, url, json=body, params=params, headers=headers, timeout=30)
            except requests.RequestException as exc:
                if resend and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise DemoError(f"{service} is not reachable at {self.where(service)} ({exc.__class__.__name__} "
                                f"on {method} {path})") from None
            if answer.status_code in RESENT_STATUSES and (resend or answer.status_code == 503) \
                    and time.monotonic() < deadline:
                time.sleep(min(float(answer.headers.get("Retry-After") or 1), 5))
                continue
            break
        found = _json(answer)
        if answer.status_code in accept:
            return answer.status_code, found
        error = found.get("error") or {}
        if answer.status_code == 401:
            raise DemoError(f"{service} refused the demo's token ({error.get('message')}): the demo signs with the "
                            f"development keys in {auth.default_keys_dir()}; run it with the services' "
                            f"CLOSELOOP_KEYS_DIR")
        fields = f" {error['fields']}" if error.get("fields") else ""
        raise DemoError(f"{service} answered {answer.status_code} to {method} {path}: "
                        f"{error.get('message') or answer.text[:200]}{fields}")

    def pages(self, service: str, path: str, who: Person, params: dict | None = None) -> list[dict]:
        """Every item of a listing, page after page."""
        params, items = {**(params or {}), "limit": 200}, []
        while True:
            _, page = self.call(service, "GET", path, who, params=params)
            items += page["items"]
            if not page.get("next_cursor"):
                return items
            params["cursor"] = page["next_cursor"]

    def wait_for(self, what: str, service: str, look):
        """`look()` until it gives something, for at most `patience` seconds."""
        started = time.monotonic()
        deadline, pause = started + self.patience, 0.02
        while True:
            found = look()
            if found:
                self.waited += time.monotonic() - started
                return found
            if time.monotonic() > deadline:
                raise DemoError(f"waited {self.patience:.0f} s for {what} on {service} ({self.where(service)}): "
                                f"are its consumer, its timers and the relays running?")
            time.sleep(pause)
            pause = min(pause * 2, 0.25)


def _json(answer) -> dict:
    try:
        found = answer.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
