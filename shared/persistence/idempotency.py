"""Idempotency-Key: a retried request returns the first answer and changes nothing.

The key row is written in the request's own transaction, so the answer is stored if and
only if the effect is. A concurrent duplicate waits on the unique index until the first
commits, then reads its answer.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.web.errors import Conflict, ValidationFailed

MAX_KEY_LENGTH = 200


def add_tables(metadata: sa.MetaData, purge_index: bool = True) -> sa.Table:
    return sa.Table(
        "idempotency_keys", metadata,
        sa.Column("principal", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("response", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # The purge finds its oldest rows through this, never by scanning the table.
        *([sa.Index("ix_idempotency_keys_created_at", "created_at")] if purge_index else []),
    )


def create_tables_v1(op) -> None:
    metadata = sa.MetaData()
    add_tables(metadata, purge_index=False)  # added by a later migration (intake's 0006)
    metadata.create_all(op.get_bind())


KEYS = add_tables(sa.MetaData())


def request_hash(method: str, path: str, body: dict) -> str:
    try:
        canonical = json.dumps([method, path, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:  # read_json refuses such bodies first; a 400 here too, never a 500
        raise ValidationFailed("the body is nested too deeply", fields={"_body": ["nested too deeply"]}) from None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_KEY = re.compile(r"^[\x21-\x7e]{1,%d}$" % MAX_KEY_LENGTH)


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not _KEY.match(key):
        raise ValidationFailed("invalid Idempotency-Key header", fields={"Idempotency-Key": [
            f"must be 1-{MAX_KEY_LENGTH} visible ASCII characters (a UUID is a good key)"]})
    return key


def principal(identity) -> str:
    """Whose key space a key belongs to: the same key from another subject, role or scope
    is another key (a subject name alone may be shared, e.g. by every till of a chain)."""
    scope = json.dumps(identity.scope, sort_keys=True)
    return f"{identity.subject}|{identity.role}|{scope}"


def claim(conn: sa.Connection, principal: str, key: str, digest: str) -> tuple[int, dict] | None:
    """Claim the key for this request. Returns the stored (status, body) of an earlier
    identical request, None when this request is the first; 409 for a different body."""
    inserted = conn.execute(
        pg_insert(KEYS).values(principal=principal, key=key, request_hash=digest)
        .on_conflict_do_nothing().returning(KEYS.c.key)).first()
    if inserted:
        return None
    return lookup(conn, principal, key, digest)


def lookup(conn: sa.Connection, principal: str, key: str, digest: str) -> tuple[int, dict] | None:
    """The stored answer for this key, if a committed request holds it (409 if its body
    differed). A cheap early look, before work a retry would waste; `claim` decides."""
    row = conn.execute(sa.select(KEYS).where(KEYS.c.principal == principal, KEYS.c.key == key)).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise Conflict("this Idempotency-Key was used with a different request body",
                       fields={"Idempotency-Key": ["already used for a different request"]})
    return row.status, json.loads(row.response)


def record(conn: sa.Connection, principal: str, key: str, status: int, body: dict) -> None:
    conn.execute(KEYS.update().where(KEYS.c.principal == principal, KEYS.c.key == key)
                 .values(status=status, response=json.dumps(body, ensure_ascii=False)))


class Keys:
    """The keys of a unit of work's transaction (a repository: the fake in
    shared.testing.fakes keeps them in memory)."""

    def __init__(self, uow):
        self._uow = uow

    def lookup(self, principal: str, key: str, digest: str) -> tuple[int, dict] | None:
        return lookup(self._uow.conn, principal, key, digest)

    def claim(self, principal: str, key: str, digest: str) -> tuple[int, dict] | None:
        return claim(self._uow.conn, principal, key, digest)

    def record(self, principal: str, key: str, status: int, body: dict) -> None:
        record(self._uow.conn, principal, key, status, body)


@dataclass(frozen=True)
class Retry:
    """One POST's idempotency: nothing at all without a key. Use `earlier` before any
    check (a retry gets the first answer, 409 comes first), then `claim` and `record` in the
    request's unit of work (whose `idempotency` is a Keys)."""

    principal: str
    key: str | None
    digest: str

    @classmethod
    def of(cls, identity, key: str | None, path: str, body: dict) -> "Retry":
        return cls(principal(identity), key, request_hash("POST", path, body))

    def earlier(self, store) -> tuple[int, dict] | None:
        if self.key is None:
            return None
        with store.unit_of_work() as uow:
            return uow.idempotency.lookup(self.principal, self.key, self.digest)

    def claim(self, uow) -> tuple[int, dict] | None:
        """None for the first request; the stored answer if a concurrent twin committed first."""
        return None if self.key is None else uow.idempotency.claim(self.principal, self.key, self.digest)

    def record(self, uow, status: int, body: dict) -> None:
        if self.key is not None:
            uow.idempotency.record(self.principal, self.key, status, body)
