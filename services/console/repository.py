"""The console's repositories over its tables (models.py), opened on each unit of work."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.console import models
from shared.persistence.unit_of_work import Store, UnitOfWork


@dataclass(frozen=True)
class StaffMember:
    id: str
    login: str
    display_name: str
    role: str
    scope_kind: str          # branch | region | all
    scope_value: str | None  # the branch code or region name; None for all
    active: bool
    password_hash: str

    def token_scope(self) -> dict:
        """issue_token's scope arguments."""
        if self.scope_kind == "all":
            return {"branch": "*"}
        return {self.scope_kind: self.scope_value}

    def scope_label(self) -> str:
        return "*" if self.scope_kind == "all" else self.scope_value


@dataclass(frozen=True)
class Session:
    id_hash: str
    csrf_token: str
    language: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    staff: StaffMember | None  # None: not signed in


class StaffAccounts:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def by_login(self, login: str) -> StaffMember | None:
        row = self._uow.execute(sa.select(models.staff).where(models.staff.c.login == login)).first()
        return None if row is None else _staff(row)

    def names(self, logins) -> dict[str, str]:
        """login -> display name, for the logins that are staff members here (a service shows who
        did something by the subject of their token: the login, for the console's staff)."""
        wanted = sorted({str(login) for login in logins if login})
        if not wanted:
            return {}
        t = models.staff
        return {row.login: row.display_name
                for row in self._uow.execute(sa.select(t.c.login, t.c.display_name).where(t.c.login.in_(wanted)))}

    def add(self, member: StaffMember, now: datetime) -> bool:
        """False when the login is taken."""
        values = {name: getattr(member, name) for name in StaffMember.__dataclass_fields__}
        done = self._uow.execute(insert(models.staff).values(**values, password_changed_at=now, created_at=now,
                                                             updated_at=now)
                                 .on_conflict_do_nothing(index_elements=["login"]))
        return done.rowcount == 1

    def update(self, login: str, now: datetime, **values) -> bool:
        if "password_hash" in values:
            values["password_changed_at"] = now
        t = models.staff
        return self._uow.execute(t.update().where(t.c.login == login).values(**values, updated_at=now)).rowcount == 1


class Sessions:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, *, id_hash: str, staff_id: str | None, csrf_token: str, language: str, now: datetime,
            expires_at: datetime) -> None:
        self._uow.execute(models.sessions.insert().values(
            id_hash=id_hash, staff_id=staff_id, csrf_token=csrf_token, language=language, created_at=now,
            last_seen_at=now, expires_at=expires_at))

    def get(self, id_hash: str) -> Session | None:
        """The session and its staff member, in one round trip."""
        s, m = models.sessions, models.staff
        row = self._uow.execute(sa.select(s, *[c.label(f"member_{c.name}") for c in m.c])
                                .select_from(s.outerjoin(m, m.c.id == s.c.staff_id))
                                .where(s.c.id_hash == id_hash)).first()
        if row is None:
            return None
        member = None
        if row.staff_id is not None:
            member = _staff(_Prefixed(row, "member_"))
        return Session(id_hash=row.id_hash, csrf_token=row.csrf_token, language=row.language,
                       created_at=row.created_at, last_seen_at=row.last_seen_at, expires_at=row.expires_at,
                       staff=member)

    def touch(self, id_hash: str, now: datetime) -> None:
        t = models.sessions
        self._uow.execute(t.update().where(t.c.id_hash == id_hash).values(last_seen_at=now))

    def set_language(self, id_hash: str, language: str) -> None:
        t = models.sessions
        self._uow.execute(t.update().where(t.c.id_hash == id_hash).values(language=language))

    def end(self, id_hash: str) -> None:
        self._uow.execute(models.sessions.delete().where(models.sessions.c.id_hash == id_hash))

    def end_all_of(self, staff_id: str) -> int:
        t = models.sessions
        return self._uow.execute(t.delete().where(t.c.staff_id == staff_id)).rowcount

    def purge(self, *, idle_before: datetime, anonymous_idle_before: datetime, now: datetime) -> int:
        """Delete sessions past their absolute end or idle too long (what a request would end)."""
        t = models.sessions
        return self._uow.execute(t.delete().where(sa.or_(
            t.c.expires_at <= now,
            sa.and_(t.c.staff_id.is_not(None), t.c.last_seen_at <= idle_before),
            sa.and_(t.c.staff_id.is_(None), t.c.last_seen_at <= anonymous_idle_before)))).rowcount


@dataclass(frozen=True)
class Failures:
    failures: int
    first_failed_at: datetime
    last_failed_at: datetime
    locked_until: datetime | None


class LoginFailures:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def lock(self, keys: list[str]) -> None:
        """Transaction-scoped advisory locks on these counts, in one order: a count that has no
        row yet is locked too (FOR UPDATE locks only rows that exist), so concurrent failures are
        never lost and two transactions never wait for each other in a circle."""
        for key in sorted(set(keys)):
            self._uow.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(key, 0))))

    def get(self, keys: list[str], *, lock: bool = False) -> dict[str, Failures]:
        t = models.login_failures
        statement = sa.select(t).where(t.c.key.in_(keys)).order_by(t.c.key)
        rows = self._uow.execute(statement.with_for_update() if lock else statement).all()
        return {row.key: Failures(row.failures, row.first_failed_at, row.last_failed_at, row.locked_until)
                for row in rows}

    def put(self, key: str, failures: Failures) -> None:
        values = {"failures": failures.failures, "first_failed_at": failures.first_failed_at,
                  "last_failed_at": failures.last_failed_at, "locked_until": failures.locked_until}
        self._uow.execute(insert(models.login_failures).values(key=key, **values)
                          .on_conflict_do_update(index_elements=["key"], set_=values))

    def clear(self, key: str) -> None:
        self._uow.execute(models.login_failures.delete().where(models.login_failures.c.key == key))

    def purge(self, before: datetime) -> int:
        """Counts nobody needs any more; a row a sign-in holds now is left for the next purge (the
        purge never waits, so it never deadlocks with one)."""
        t = models.login_failures
        stale = (sa.select(t.c.key).where(t.c.last_failed_at < before, sa.or_(
            t.c.locked_until.is_(None), t.c.locked_until < before)).with_for_update(skip_locked=True))
        return self._uow.execute(t.delete().where(t.c.key.in_(stale))).rowcount


class ConsoleUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.staff = StaffAccounts(self)
        self.sessions = Sessions(self)
        self.failures = LoginFailures(self)


class ConsoleStore(Store):
    unit_of_work_class = ConsoleUnitOfWork


class _Prefixed:
    def __init__(self, row, prefix: str):
        self._row, self._prefix = row, prefix

    def __getattr__(self, name):
        return getattr(self._row, self._prefix + name)


def _staff(row) -> StaffMember:
    return StaffMember(id=str(row.id), login=row.login, display_name=row.display_name, role=row.role,
                       scope_kind=row.scope_kind, scope_value=row.scope_value, active=row.active,
                       password_hash=row.password_hash)
