"""What a running service loads once from its config, and the one dependency provider that
hands it to workers: the chain policy and the service's own rules from it, the clock, the
token verifier, the customer-reference key and the config. Loaders are cached per config
value, so several services in one test process each get their own."""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from shared.security import auth
from shared.calendar.clock import DEMO_CLOCK_ENV, DemoClock, DemoClockRefused, SystemClock
from shared.calendar.policy import load_policy
from shared.runtime.config import secret


@functools.lru_cache(maxsize=16)
def policy(path: str | None):
    return load_policy(path)


@functools.lru_cache(maxsize=16)
def verifier(policy_path: str | None) -> auth.TokenVerifier:
    return auth.TokenVerifier(auth.load_public_key(), policy(policy_path))


def customer_ref_key(config: dict) -> bytes:
    configured = config.get("CUSTOMER_REF_KEY")
    if configured:
        return configured.encode() if isinstance(configured, str) else configured
    given = secret("CLOSELOOP_CUSTOMER_REF_KEY")
    if given:  # from the environment when the config has none (a config made by hand)
        return given.strip()
    if not auth.dev_keys_allowed():
        # Every replica must hash customers with the same key, kept for years: never invent one.
        raise auth.KeysNotConfigured("no customer reference key: set CLOSELOOP_CUSTOMER_REF_KEY or "
                                     "CLOSELOOP_CUSTOMER_REF_KEY_FILE (or CLOSELOOP_DEV_KEYS=1 in development)")
    # Development: a file beside the dev signing keys, made on first use.
    keys_dir = auth.ensure_dev_keys()
    path = keys_dir / "customer-ref.key"
    if not path.exists():
        # Written whole under another name, then linked: when two processes start together,
        # one link wins and both read the same complete key.
        tmp = keys_dir / f".customer-ref.{os.getpid()}.tmp"
        tmp.write_bytes(os.urandom(32).hex().encode())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes().strip()


_system_clock = SystemClock()
log = logging.getLogger("closeloop.clock")


def clock(config: dict):
    """Tests put a ManualClock object in the config; nothing in production can. A demo clock
    file (config DEMO_CLOCK_FILE, from CLOSELOOP_DEMO_CLOCK_FILE; the environment when the config
    has no such key) gives the DemoClock `closeloop demo` moves, only where development keys are
    allowed: elsewhere DemoClockRefused, so that a production service never runs on a moved clock."""
    if config.get("CLOCK") is not None:
        return config["CLOCK"]
    path = config["DEMO_CLOCK_FILE"] if "DEMO_CLOCK_FILE" in config else os.environ.get(DEMO_CLOCK_ENV)
    if not path:
        return _system_clock
    if not auth.dev_keys_allowed():
        raise DemoClockRefused(f"{DEMO_CLOCK_ENV} is set ({path}), but the demo clock moves the services' time "
                               f"and is for development only: it needs CLOSELOOP_DEV_KEYS=1. In production, "
                               f"unset {DEMO_CLOCK_ENV}")
    return _demo_clock(os.path.abspath(path))


@functools.lru_cache(maxsize=16)
def _demo_clock(path: str) -> DemoClock:
    """One DemoClock a file per process, so every part of a service reads one clock that never
    goes backwards."""
    made = DemoClock(path)
    log.warning("the demo clock is on: now is the system time plus the offset in %s (%.0f s now); "
                "for development only", path, made.offset)
    return made


@dataclass(frozen=True)
class Environment:
    """What a worker gets as `self.env`."""

    service: str
    policy: object          # the whole chain policy (branches, regions, product types)
    rules: object | None    # this service's own section of it (None: it has none)
    clock: object
    verifier: auth.TokenVerifier
    ref_key: bytes | None   # only for a service that hashes contacts (intake)
    config: dict

    def now(self):
        return self.clock.now()


class Runtime(DependencyProvider):
    """`env = Runtime()` in a service class; `Runtime(customer_ref_key=True)` for one that
    turns contacts into `customer_ref`. Missing keys or a bad policy fail the start, not a
    request."""

    def __init__(self, customer_ref_key: bool = False):
        self.needs_ref_key = customer_ref_key

    def setup(self):
        config = self.container.config
        name = self.container.service_name
        chain = policy(config.get("POLICY_FILE"))
        self.environment = Environment(
            service=name, policy=chain, rules=chain.sections.get(name), clock=clock(config),
            verifier=verifier(config.get("POLICY_FILE")),
            ref_key=customer_ref_key(config) if self.needs_ref_key else None, config=config)

    def get_dependency(self, worker_ctx):
        return self.environment


class ProcessFiles(DependencyProvider):
    """`processes = ProcessFiles(load)`: a service's process files, loaded and checked once at
    start by `load(directory, clock)` (the service's own loader: which files, which tasks and
    operators). Config PROCESS_DIR (env CLOSELOOP_PROCESS_DIR) names another directory of
    process files, e.g. a chain's edited ones; None: the service's own."""

    def __init__(self, load):
        self.load = load

    def setup(self):
        config = self.container.config
        self.loaded = self.load(config.get("PROCESS_DIR"), clock(config))

    def get_dependency(self, worker_ctx):
        return self.loaded
