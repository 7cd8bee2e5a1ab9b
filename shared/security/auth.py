"""Signed bearer tokens (EdDSA / Ed25519), roles and scope, checked in one place.

Services hold only the public key. The private key signs tokens (`closeloop token issue`).
Keys come from CLOSELOOP_JWT_{PRIVATE,PUBLIC}_KEY (PEM text) or ..._KEY_FILE (a path);
without either, a development pair is generated on first use in CLOSELOOP_KEYS_DIR
(default `.keys/` at the repository root, git-ignored).

A user's own token never goes on the bus. A service that calls another over RPC for its
user sends a grant instead: a token of a few minutes naming the call, the record and the
purpose, signed with the grant key (CLOSELOOP_GRANT_PRIVATE_KEY, held only by the calling
services) and checked with its public half (CLOSELOOP_GRANT_PUBLIC_KEY, held by the callee).
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

from shared.runtime.config import secret
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


def ensure_dev_keys(keys_dir: Path | None = None) -> Path:
    """Create the development key pairs (tokens, grants) if missing; returns the folder."""
    keys_dir = keys_dir or default_keys_dir()
    for stem in ("jwt", "grant"):
        _ensure_pair(keys_dir, stem)
    return keys_dir


def _ensure_pair(keys_dir: Path, stem: str) -> None:
    private_path = keys_dir / f"{stem}-private.pem"
    public_path = keys_dir / f"{stem}-public.pem"
    if private_path.exists() and public_path.exists():
        return
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    # Write under temporary names and rename, so two processes starting together agree.
    tmp = keys_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    (tmp / private_path.name).write_bytes(private_pem)
    os.chmod(tmp / private_path.name, 0o600)
    (tmp / public_path.name).write_bytes(public_pem)
    if not private_path.exists():
        os.replace(tmp / private_path.name, private_path)
        os.replace(tmp / public_path.name, public_path)
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()


def load_private_key() -> bytes:
    return secret("CLOSELOOP_JWT_PRIVATE_KEY") or (ensure_dev_keys() / "jwt-private.pem").read_bytes()


class KeysNotConfigured(RuntimeError):
    pass


def dev_keys_allowed() -> bool:
    """Development keys only when asked for (make dev, the tests, the development compose
    file): a production service without its keys must fail at start, not invent some."""
    return os.environ.get("CLOSELOOP_DEV_KEYS") == "1"


def _configured_or_dev(variable: str, dev_file: str, what: str) -> bytes:
    configured = secret(variable)
    if configured:
        return configured
    if not dev_keys_allowed():
        raise KeysNotConfigured(f"no {what}: set {variable} or {variable}_FILE "
                                "(or CLOSELOOP_DEV_KEYS=1 for development keys)")
    return (ensure_dev_keys() / dev_file).read_bytes()


def load_public_key() -> bytes:
    return _configured_or_dev("CLOSELOOP_JWT_PUBLIC_KEY", "jwt-public.pem", "token verification key")


def load_grant_private_key() -> bytes:
    return _configured_or_dev("CLOSELOOP_GRANT_PRIVATE_KEY", "grant-private.pem", "grant signing key")


def load_grant_public_key() -> bytes:
    return _configured_or_dev("CLOSELOOP_GRANT_PUBLIC_KEY", "grant-public.pem", "grant verification key")


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
    if not _visible(branch or region):
        raise ValueError("the branch or region must not be empty")
    if not _subject_ok(subject):
        raise ValueError(f"the subject must be printable text of 1 to {MAX_SUBJECT_CHARS} characters, "
                         f"without surrounding spaces")
    now = now or datetime.now(timezone.utc)
    scope = {"region": region} if region else ({"all": True} if branch == "*" else {"branch": branch})
    claims = {"iss": ISSUER, "sub": subject, "role": role, "scope": scope,
              "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp()),
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, private_key or load_private_key(), algorithm=ALGORITHM)


def _visible(text) -> bool:
    return isinstance(text, str) and bool(text.strip())


MAX_SUBJECT_CHARS = 200


def _subject_ok(text) -> bool:
    """A subject is stored and logged with what its caller does: printable text (no NUL,
    lone surrogate, invisible or control character), not padded, of a sensible length."""
    return (isinstance(text, str) and 0 < len(text) <= MAX_SUBJECT_CHARS and text.isprintable()
            and text.strip() == text)


# 9999-12-31T23:59:59Z: later cannot be a date; nor can it be converted without OverflowError.
LATEST_EXP = 253_402_300_799


@dataclass(frozen=True)
class Identity:
    """Who is calling: subject, role and the branches in scope (None: every branch)."""

    subject: str
    role: str
    branches: frozenset[str] | None
    scope: dict
    expires_at: int | None = None  # the token's exp: a grant made for this user ends by then

    def can_see(self, branch_code: str) -> bool:
        return self.branches is None or branch_code in self.branches


# -- grants: what a service sends over RPC instead of its user's token -----------------------------

GRANT_ISSUER = "closeloop-grant"
GRANT_TTL = timedelta(minutes=2)
GRANT_MAX_SECONDS = 300  # a grant living longer than this is refused whoever signed it


def issue_grant(identity: Identity, *, call: str, record_id: str, purpose: str,
                private_key: bytes | None = None, ttl: timedelta = GRANT_TTL, now: datetime | None = None) -> str:
    """A short token for one RPC (`call`, e.g. "intake.get_contact") on one record for one
    purpose, carrying the user's subject, role and scope; it ends with the user's token."""
    now = now or datetime.now(timezone.utc)
    issued = int(now.timestamp())
    expires = min(issued + int(ttl.total_seconds()), identity.expires_at or issued + int(ttl.total_seconds()))
    claims = {"iss": GRANT_ISSUER, "aud": call, "sub": identity.subject, "role": identity.role,
              "scope": identity.scope, "record": record_id, "purpose": purpose,
              "iat": issued, "exp": expires, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, private_key or load_grant_private_key(), algorithm=ALGORITHM)


class TokenVerifier:
    """Verifies tokens with the public key and resolves regions through the chain policy;
    verifies grants with the grant key (loaded when the first grant arrives)."""

    def __init__(self, public_key: bytes, policy, grant_key: bytes | None = None):
        self._key = public_key
        self._policy = policy
        self._grant_key = grant_key
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

    def grant(self, grant, *, call: str, record_id: str, purpose) -> Identity:
        """The user a grant speaks for, if it was made for this call, record and purpose."""
        if not isinstance(grant, str) or not grant:
            raise Unauthorized("missing grant")
        if self._grant_key is None:
            self._grant_key = load_grant_public_key()
        claims = self._decode(grant, self._grant_key, issuer=GRANT_ISSUER, audience=call,
                              required=["exp", "iat", "sub", "iss", "aud", "jti"])
        if not isinstance(claims.get("iat"), int) or claims["exp"] - claims["iat"] > GRANT_MAX_SECONDS:
            raise Unauthorized(f"invalid grant: it must live at most {GRANT_MAX_SECONDS} s")
        if claims.get("record") != record_id or claims.get("purpose") != purpose:
            raise Unauthorized("invalid grant: it was made for another record or purpose")
        return self._identity(claims)

    def _decode(self, token: str, key: bytes, *, issuer: str, required: list[str], audience=None) -> dict:
        try:
            # A little leeway: the machine that issued the token may run a few seconds ahead.
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=issuer, audience=audience,
                                leeway=30, options={"require": required})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.DecodeError:  # its own words quote codecs and padding: of no use to a caller
            raise Unauthorized("invalid token: not a well-formed signed token") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        except (OverflowError, ValueError):  # a time claim no clock can hold (exp: 10**400)
            raise Unauthorized("invalid token: a time claim is out of range") from None
        # PyJWT takes a float, or a string of digits, as exp: only an integer is unambiguous.
        if type(claims["exp"]) is not int or not 0 < claims["exp"] <= LATEST_EXP:
            raise Unauthorized("invalid token: exp must be an integer time before the year 10000")
        return claims

    def _verify(self, token: str) -> tuple[Identity, float]:
        claims = self._decode(token, self._key, issuer=ISSUER, required=["exp", "sub", "iss"])
        if "aud" in claims:
            raise Unauthorized("invalid token: a grant is not a bearer token")
        identity = self._identity(claims)
        return identity, float(claims["exp"]) + 30

    def _identity(self, claims: dict) -> Identity:
        role, scope, subject = claims.get("role"), claims.get("scope"), claims.get("sub")
        if role not in ROLES or not isinstance(scope, dict):
            raise Unauthorized("invalid token: unknown role or scope")
        if not _subject_ok(subject):
            raise Unauthorized(f"invalid token: sub must be printable text of 1 to {MAX_SUBJECT_CHARS} characters, "
                               f"without surrounding spaces")
        # Exactly one scope key: with two, which one wins would be a guess.
        if len(scope) != 1:
            raise Unauthorized("invalid token: unknown scope (it must have exactly one of all, branch or region)")
        if scope.get("all") is True:
            branches = None
        elif _visible(scope.get("branch")):
            branches = frozenset({scope["branch"]})
        elif _visible(scope.get("region")):
            branches = frozenset(self._policy.branches_in_region(scope["region"]))
        else:
            raise Unauthorized("invalid token: unknown scope")
        if branches is not None and not branches <= set(self._policy.branches):
            raise Unauthorized("invalid token: its branch is not in the chain policy")
        if branches is not None and not branches:
            raise Unauthorized("invalid token: its region has no branches in the chain policy")
        return Identity(subject=subject, role=role, branches=branches, scope=scope, expires_at=claims["exp"])

    def from_header(self, header: str | None) -> Identity:
        if not header:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return self.identity(token.strip())
