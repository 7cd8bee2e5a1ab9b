"""What a running service loads once from its config: the policy, the token verifier,
the customer-reference key, the clock. Cached per config value, so several services in
one test process each get their own."""
from __future__ import annotations

import functools
import os

from shared.security import auth
from shared.calendar.clock import SystemClock
from shared.calendar.policy import load_policy


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
    key_file = os.environ.get("CLOSELOOP_CUSTOMER_REF_KEY_FILE")
    if key_file:
        return open(key_file, "rb").read().strip()
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


def clock(config: dict):
    """Tests put a ManualClock object in the config; nothing in production can."""
    return config.get("CLOCK") or _system_clock
