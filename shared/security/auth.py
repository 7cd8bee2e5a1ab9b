"""Signed bearer tokens (EdDSA / Ed25519), roles and scope, checked in one place.

Services hold only the public key. The private key signs tokens (`closeloop token issue`).
Keys come from CLOSELOOP_JWT_{PRIVATE,PUBLIC}_KEY (PEM text) or ..._KEY_FILE (a path);
without either, a development pair is generated on first use in CLOSELOOP_KEYS_DIR
(default `.keys/` at the repository root, git-ignored).
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.web.errors import Unauthorized

ISSUER = "closeloop"
ALGORITHM = "EdDSA"
ROLES = (
    "front_desk", "store_manager", "aftercare_agent", "investigator", "regional_manager",
    "hq_analyst", "hq_admin", "auditor", "branch_integration",
)

def default_keys_dir() -> Path:
    configured = os.environ.get("CLOSELOOP_KEYS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / ".keys"


def _pem_from_env(name: str) -> bytes | None:
    text = os.environ.get(name)
    if text:
        return text.encode()
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_bytes()
    return None


def ensure_dev_keys(keys_dir: Path | None = None) -> Path:
    """Create the development key pair if it is missing; returns the folder."""
    keys_dir = keys_dir or default_keys_dir()
    private_path = keys_dir / "jwt-private.pem"
    public_path = keys_dir / "jwt-public.pem"
    if private_path.exists() and public_path.exists():
        return keys_dir
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    # Write under temporary names and rename, so two processes starting together agree.
    tmp = keys_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    (tmp / "jwt-private.pem").write_bytes(private_pem)
    os.chmod(tmp / "jwt-private.pem", 0o600)
    (tmp / "jwt-public.pem").write_bytes(public_pem)
    if not private_path.exists():
        os.replace(tmp / "jwt-private.pem", private_path)
        os.replace(tmp / "jwt-public.pem", public_path)
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()
    return keys_dir


def load_private_key() -> bytes:
    return _pem_from_env("CLOSELOOP_JWT_PRIVATE_KEY") or (ensure_dev_keys() / "jwt-private.pem").read_bytes()


class KeysNotConfigured(RuntimeError):
    pass


def dev_keys_allowed() -> bool:
    """Development keys only when asked for (make dev, the tests, the development compose
    file): a production service without its keys must fail at start, not invent some."""
    return os.environ.get("CLOSELOOP_DEV_KEYS") == "1"


def load_public_key() -> bytes:
    configured = _pem_from_env("CLOSELOOP_JWT_PUBLIC_KEY")
    if configured:
        return configured
    if not dev_keys_allowed():
        raise KeysNotConfigured("no token verification key: set CLOSELOOP_JWT_PUBLIC_KEY or "
                                "CLOSELOOP_JWT_PUBLIC_KEY_FILE (or CLOSELOOP_DEV_KEYS=1 for development keys)")
    return (ensure_dev_keys() / "jwt-public.pem").read_bytes()


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_ttl(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 12h, 30d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def issue_token(*, role: str, subject: str, branch: str | None = None, region: str | None = None,
                ttl: timedelta = timedelta(days=30), private_key: bytes | None = None,
                now: datetime | None = None) -> str:
    """Sign a token. Scope is one branch, one region, or every branch (branch='*')."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if (branch is None) == (region is None):
        raise ValueError("give exactly one scope: a branch code, a region, or branch '*'")
    now = now or datetime.now(timezone.utc)
    scope = {"region": region} if region else ({"all": True} if branch == "*" else {"branch": branch})
    claims = {"iss": ISSUER, "sub": subject, "role": role, "scope": scope,
              "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp()),
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, private_key or load_private_key(), algorithm=ALGORITHM)


@dataclass(frozen=True)
class Identity:
    """Who is calling: subject, role and the branches in scope (None: every branch)."""

    subject: str
    role: str
    branches: frozenset[str] | None
    scope: dict
    token: str = ""  # as presented: forwarded when a service reads intake's contact data for its user

    def can_see(self, branch_code: str) -> bool:
        return self.branches is None or branch_code in self.branches


class TokenVerifier:
    """Verifies tokens with the public key and resolves regions through the chain policy."""

    def __init__(self, public_key: bytes, policy):
        self._key = public_key
        self._policy = policy
        self._cache: dict[str, tuple[float, Identity]] = {}

    def identity(self, token: str | None) -> Identity:
        if not isinstance(token, str) or not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        # A till sends the same token all day: verify its signature once, its expiry always.
        cached = self._cache.get(token)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        identity, expires = self._verify(token)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[token] = (expires, identity)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            # A little leeway: the machine that issued the token may run a few seconds ahead.
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], issuer=ISSUER, leeway=30,
                                options={"require": ["exp", "sub", "iss"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        role, scope = claims.get("role"), claims.get("scope")
        if role not in ROLES or not isinstance(scope, dict):
            raise Unauthorized("invalid token: unknown role or scope")
        if scope.get("all") is True:
            branches = None
        elif isinstance(scope.get("branch"), str):
            branches = frozenset({scope["branch"]})
        elif isinstance(scope.get("region"), str):
            branches = frozenset(self._policy.branches_in_region(scope["region"]))
        else:
            raise Unauthorized("invalid token: unknown scope")
        if branches is not None and not branches <= set(self._policy.branches):
            raise Unauthorized("invalid token: its branch is not in the chain policy")
        if branches is not None and not branches:
            raise Unauthorized("invalid token: its region has no branches in the chain policy")
        identity = Identity(subject=str(claims["sub"]), role=role, branches=branches, scope=scope, token=token)
        return identity, float(claims["exp"]) + 30

    def from_header(self, header: str | None) -> Identity:
        if not header:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return self.identity(token.strip())
