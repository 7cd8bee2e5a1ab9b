"""The console's figures: who may be a staff member, how long a session lives, how hard a
wrong password is held back, how long a token for the services lives. Code, not the chain
policy file: they are the console's security contract, the same for every chain."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.security.auth import ROLES

# Every role of DESIGN.md but a branch's POS/CRM system, which is a machine client with a token.
STAFF_ROLES = tuple(role for role in ROLES if role != "branch_integration")

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"


@dataclass(frozen=True)
class Passwords:
    min_length: int = 10
    max_length: int = 256  # argon2 hashes anything, but a megabyte of "password" is a denial of service


@dataclass(frozen=True)
class Sessions:
    idle: timedelta = timedelta(minutes=30)          # nothing done this long (a page's polls are not): signed out
    absolute: timedelta = timedelta(hours=12)        # a shift, then sign in again whatever happens
    anonymous: timedelta = timedelta(hours=1)        # rows of sign-in forms from before they kept nothing stored
    touch_every: timedelta = timedelta(seconds=60)   # last_seen written at most this often (not every poll)


@dataclass(frozen=True)
class Throttle:
    """Failed sign-ins, counted per login name (as typed) and per client address within
    `window`. A login: the first `free` failures cost nothing; after them each attempt waits
    2, 4, 8... s after the last failure (`slow_base` doubled), and at `lock_after` failures
    it is locked for `lock_for`. An address: `address_lock_after` failures lock it for
    `lock_for`. A refused attempt (too early, locked) does not count and checks no password."""

    window: timedelta = timedelta(minutes=15)
    free: int = 3
    slow_base: timedelta = timedelta(seconds=2)
    lock_after: int = 10
    address_lock_after: int = 30
    lock_for: timedelta = timedelta(minutes=15)

    def wait_after(self, failures: int) -> timedelta:
        """How long after the last failure the next attempt may come."""
        if failures >= self.lock_after:
            return self.lock_for
        if failures < self.free:
            return timedelta(0)
        return self.slow_base * (2 ** (failures - self.free))


@dataclass(frozen=True)
class Tokens:
    ttl: timedelta = timedelta(minutes=5)         # a disabled staff member's calls stop within this
    renew_before: timedelta = timedelta(minutes=1)  # a cached token this close to its end is replaced
    # The dashboard link's token (GET /alerts): reporting's dashboard is a page of its own whose
    # script keeps the token from the URL's #fragment and calls the API with it; the console
    # cannot renew it behind the staff member's back as it does the 5-minute call tokens, so a
    # 5-minute token would leave a dashboard tab refused mid-read. 30 minutes is a sitting at the
    # charts. The price: a staff member disabled (or whose role or scope changes) keeps reading
    # KPIs and alerts, read-only, through a dashboard tab opened before, for up to 30 minutes.
    dashboard_ttl: timedelta = timedelta(minutes=30)


@dataclass(frozen=True)
class ConsoleRules:
    passwords: Passwords = Passwords()
    sessions: Sessions = Sessions()
    throttle: Throttle = Throttle()
    tokens: Tokens = Tokens()
    service_timeout_seconds: float = 5.0  # a page never waits longer on one service call, its answer read in full
    # A service that did not answer in time is not asked again for this long: its pages say so at
    # once instead of each holding one of the console's workers for the whole timeout.
    service_rest_seconds: float = 10.0
    service_answer_max_bytes: int = 8 * 1024 * 1024  # an answer larger than this is garbage, not read on
    # What a page shows beside its own record (the customer's summary, the standard answers): waited
    # for this long at most, then the page goes without it (and the service rests, as above).
    aside_timeout_seconds: float = 1.5
    # A file from a service (reporting's case library): its first byte is waited for this long at
    # most (a workbook is built whole before it is sent; the gateway allows exports as long), then
    # each read of its body `service_timeout_seconds`, however long the whole body takes.
    export_wait_seconds: float = 120.0


RULES = ConsoleRules()

