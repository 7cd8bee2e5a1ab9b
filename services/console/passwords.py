"""Password hashes: argon2id with argon2-cffi's defaults (RFC 9106's second recommended
profile: 3 passes, 64 MiB, 4 lanes; about 50-100 ms here). The hashing runs in a real thread
(eventlet's tpool) so a sign-in never stalls the other requests of the process."""
from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()


def _off_the_hub(call, *args):
    try:
        from eventlet import patcher, tpool
    except ImportError:  # pragma: no cover - eventlet is a dependency
        return call(*args)
    if not patcher.is_monkey_patched("thread"):
        return call(*args)  # the CLI: nothing else to keep running
    return tpool.execute(call, *args)


def hash_password(password: str) -> str:
    return _off_the_hub(_HASHER.hash, password)


def verify(password_hash: str, password: str) -> bool:
    try:
        return _off_the_hub(_HASHER.verify, password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _HASHER.hash("closeloop: no such staff member")


def verify_nobody(password: str) -> bool:
    """The same work as a real check, for a login nobody has: the answer's time does not tell
    whether a login exists."""
    verify(_dummy_hash(), password)
    return False
