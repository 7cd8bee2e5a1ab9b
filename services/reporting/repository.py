"""Reporting's repositories over its tables (models.py), opened on each unit of work: the event
log, and the case facts locked per case so that two batches folding events of one case (in any
order: the fold does not mind) never overwrite each other."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.reporting import alerts
from services.reporting import facts as case_facts
from services.reporting import kpis, models, queries
from shared.persistence.unit_of_work import Store, UnitOfWork

# The columns KPIs filter and group by, from the folded facts.
_COLUMNS = ("branch_code", "region", "kind", "category", "priority", "channel", "technician_id", "state",
            "received_at", "first_response_at", "first_response_due", "resolved_at", "resolution_due", "closed_at",
            "escalation_level", "reopened", "outcome", "follow_up_score", "customer_ref", "converted_from")


def _insert_many(uow: UnitOfWork, statement, rows: list[dict], returning=None):
    """Many rows in few round trips. SQLAlchemy sends an executemany INSERT as multi-row VALUES
    only when it returns something (else psycopg2 sends it row by row): it returns `returning`,
    by default the key."""
    return uow.execute(statement.returning(*(returning or statement.table.primary_key.columns)), rows)


class EventLog:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def append(self, events: list[dict], now: datetime) -> list[dict]:
        """The events not logged before (by event id), logged now, in the order given."""
        if not events:
            return []
        t = models.event_log
        rows = [{"event_id": e["event_id"], "source": e["source"], "type": e["type"], "version": e.get("version", 1),
                 "branch_code": e.get("branch_code"), "correlation_id": e["correlation_id"],
                 "sequence": e.get("sequence"), "occurred_at": e["occurred_at"], "logged_at": now,
                 "envelope": e} for e in events]
        rows.sort(key=lambda r: r["event_id"])  # two batches holding one event wait in one order
        # Many parameter sets to one cached statement: SQLAlchemy sends them as multi-row INSERTs.
        new = {row.event_id for row in _insert_many(self._uow, insert(t).on_conflict_do_nothing(
            index_elements=["event_id"]), rows, returning=[t.c.event_id])}
        seen, fresh = set(), []
        for e in events:  # a batch may hold one event twice (a redelivery): once
            if e["event_id"] in new and e["event_id"] not in seen:
                seen.add(e["event_id"])
                fresh.append(e)
        return fresh

    def after(self, last_id: int, limit: int) -> list[tuple[int, dict]]:
        """(log id, envelope) of the events logged after `last_id`, in the order logged."""
        t = models.event_log
        return [(row.id, row.envelope) for row in self._uow.execute(
            sa.select(t.c.id, t.c.envelope).where(t.c.id > last_id).order_by(t.c.id).limit(limit))]


class Folded:
    """Rows folded from events (a case's, a visit's facts), locked per record while a batch
    folds into them, so that two batches about one record (in any order: the fold does not
    mind) never overwrite each other."""

    table: sa.Table
    key: str

    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def new(self, record_id: str) -> dict:
        raise NotImplementedError

    def columns(self, facts: dict) -> dict:
        """The columns KPIs filter and group by, from the folded facts."""
        raise NotImplementedError

    def lock(self, ids: list[str], now: datetime) -> dict[str, dict]:
        """The facts of these records (new ones for records not seen yet), locked until commit,
        in the order of their ids (two batches never wait for each other in opposite orders)."""
        if not ids:
            return {}
        t, key = self.table, self.table.c[self.key]
        ids = sorted(set(ids))
        _insert_many(self._uow, insert(t).on_conflict_do_nothing(index_elements=[self.key]),
                     [{self.key: i, "facts": self.new(i), "updated_at": now} for i in ids])
        rows = self._uow.execute(sa.select(key, t.c.facts).where(key.in_(ids)).order_by(key).with_for_update()).all()
        return {str(row[0]): row.facts for row in rows}

    def save(self, folded: dict[str, dict], now: datetime) -> None:
        if not folded:
            return
        rows = [{self.key: record_id, **self.columns(facts), "facts": facts, "updated_at": now}
                for record_id, facts in sorted(folded.items())]
        # The rows exist and are locked (lock()): an upsert, for its many-rows-at-once INSERT.
        statement = insert(self.table)
        _insert_many(self._uow, statement.on_conflict_do_update(
            index_elements=[self.key], set_={name: statement.excluded[name] for name in rows[0] if name != self.key}),
            rows)
        # The standard answers they used, as their facts say now.
        t = models.answer_uses
        self._uow.execute(t.delete().where(t.c.record_id.in_(list(folded)), self._uses))
        uses = [row for facts in folded.values() for row in case_facts.answer_uses(facts)]
        if uses:
            _insert_many(self._uow, insert(t), uses)

    @property
    def _uses(self):
        """Which rows of answer_uses are this model's."""
        purpose = models.answer_uses.c.purpose
        return purpose == case_facts.VISIT_ANSWER if self.key == "visit_id" else purpose != case_facts.VISIT_ANSWER

    def clear(self) -> None:
        # DELETE, not TRUNCATE: readers keep the old rows until the rebuild commits.
        self._uow.execute(models.answer_uses.delete().where(self._uses))
        self._uow.execute(self.table.delete())


def _at(text: str | None):
    return datetime.fromisoformat(text) if text else None


class CaseFacts(Folded):
    table, key = models.case_facts, "case_id"
    new = staticmethod(case_facts.new_case)

    def columns(self, facts: dict) -> dict:
        action = facts.get("corrective_action") or {}
        return {**{name: facts.get(name) for name in _COLUMNS}, "owner": facts.get("owner"),
                "corrective_due": action.get("due"), "corrective_done_at": action.get("done_at"),
                "corrective_on_time": action.get("on_time"), "decision": facts.get("decision"),
                "first_bucket": kpis.duration_bucket(facts.get("received_at"), facts.get("first_response_at")),
                "resolution_bucket": kpis.duration_bucket(facts.get("received_at"), facts.get("resolved_at"))}

    def save(self, folded: dict[str, dict], now: datetime) -> None:
        super().save(folded, now)
        if not folded:
            return
        t = models.case_remedies
        self._uow.execute(t.delete().where(t.c.case_id.in_(list(folded))))
        remedies = [{"case_id": case_id, "remedy_id": remedy_id, "type": r.get("type"), "amount": r.get("amount"),
                     "status": r.get("status"), "promise": r.get("promise")}
                    for case_id, facts in folded.items() for remedy_id, r in facts["remedies"].items() if r.get("type")]
        if remedies:
            _insert_many(self._uow, insert(t), remedies)

    def clear(self) -> None:
        self._uow.execute(models.case_remedies.delete())
        super().clear()


class VisitFacts(Folded):
    table, key = models.visit_facts, "visit_id"
    new = staticmethod(case_facts.new_visit)

    def columns(self, facts: dict) -> dict:
        return {name: facts.get(name) for name in ("branch_code", "kind", "status", "due_at", "finished_at",
                                                    "attempts", "reached", "score", "suggestions",
                                                    "adverse_reaction", "customer_ref")}


class Records:
    """What is whole in one event (a sale's items, an adverse reaction, an archive read): kept
    once whatever the copies."""

    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, table: sa.Table, rows: list[dict]) -> set[tuple]:
        """The rows not kept before, kept: their keys."""
        if not rows:
            return set()
        return {tuple(r) for r in _insert_many(self._uow, insert(table).on_conflict_do_nothing(), rows)}

    def clear(self) -> None:
        for table in (models.sale_items, models.sales, models.adverse_reactions, models.access_log):
            self._uow.execute(table.delete())


class Alerts:
    """The records alerts count, near a key's new ones, and the alerts raised."""

    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def complaints_by_id(self, case_ids: list[str]) -> list[alerts.Complaint]:
        t = models.case_facts
        return self._complaints(t.c.case_id.in_(case_ids), t.c.received_at.is_not(None))

    def complaints(self, keys: list[tuple], lo: datetime, hi: datetime) -> list[alerts.Complaint]:
        """Complaints received in [lo, hi] that count towards any of these keys (alerts.keys_of)."""
        t = models.case_facts
        pairs = [(key[1], key[2]) for key in keys if key[0] == "branch_category"]
        technicians = [key[1] for key in keys if key[0] == "technician"]
        which = [sa.tuple_(t.c.branch_code, t.c.category).in_(pairs)] if pairs else []
        which += [t.c.technician_id.in_(technicians)] if technicians else []
        if not which:
            return []
        return self._complaints(t.c.received_at.between(lo, hi), sa.or_(*which))

    def _complaints(self, *where) -> list[alerts.Complaint]:
        t = models.case_facts
        return [alerts.Complaint(str(r.case_id), r.branch_code, r.category, r.technician_id, r.received_at)
                for r in self._uow.execute(sa.select(t.c.case_id, t.c.branch_code, t.c.category, t.c.technician_id,
                                                     t.c.received_at).where(t.c.kind == "complaint", *where))]

    def reactions(self, batches: list[str], lo: datetime, hi: datetime) -> list[alerts.AdverseReaction]:
        t = models.adverse_reactions
        if not batches:
            return []
        return [alerts.AdverseReaction(str(r.visit_id), r.branch_code, r.batch, r.sku, r.reported_at)
                for r in self._uow.execute(sa.select(t).where(t.c.batch.in_(batches),
                                                               t.c.reported_at.between(lo, hi)))]

    def lock_keys(self, keys: list[str]) -> None:
        """One batch at a time evaluates a key (in key order: no two wait for each other)."""
        if keys:
            self._uow.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(k)) FROM "
                                      "(SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS ordered"),
                              {"keys": sorted(set(keys))})

    def raised(self, keys: list[str]) -> dict[str, list[dict]]:
        """The alerts raised about these keys (kind:by:value...), oldest first."""
        t = models.alerts
        found: dict[str, list[dict]] = {}
        for r in self._uow.execute(sa.select(t).where(t.c.key.in_(keys)).order_by(t.c.first_at)):
            found.setdefault(r.key, []).append(dict(r._mapping))
        return found

    def put(self, row: dict) -> None:
        t = models.alerts
        grown = ("count", "first_at", "last_at", "active_until", "records", "branches")
        self._uow.execute(insert(t).values(row).on_conflict_do_update(
            index_elements=["alert_id"], set_={name: row[name] for name in grown}))



# Ingest holds it shared while it changes the cells, a making of them all exclusively: cells are
# made from facts no batch is still changing, and a batch after that adds to them.
_ROLLUP_LOCK = 0x6b706943  # 'kpiC'


class Rollups:
    """The KPI cells (models.kpi_values): each batch adds what its records' changes add to the
    chain's measures of their day, week and month, for their category and for every case."""

    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def kept_in(self) -> str | None:
        """Held for this transaction: the zone the cells are kept in, or None when they are to
        be made again (refresh_rollups) and a batch leaves them alone."""
        self._uow.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:lock)"), {"lock": _ROLLUP_LOCK})
        # Read after the lock is held, in a statement of its own: a statement's snapshot is taken
        # before it waits, so one that waited for a making of the cells would still see them
        # incomplete and leave its changes out of them (found by killing reporting mid-batch).
        row = self.state()
        return row.zone if row is not None and row.complete else None

    def add(self, changes: dict[tuple, object]) -> None:
        """{(grain, period, category, measure, key): value added}."""
        rows = [(*key, value) for key, value in sorted(changes.items()) if value]
        if not rows:
            return
        # One statement of six arrays (thousands of rows a batch: no per-row binding), in key
        # order: two batches adding to one cell wait for each other in one order.
        columns = list(zip(*rows))
        self._uow.execute(sa.text(
            "INSERT INTO kpi_values (grain, period, category, measure, key, value) "
            "SELECT * FROM unnest(CAST(:grains AS text[]), CAST(:periods AS date[]), CAST(:categories AS text[]), "
            "CAST(:measures AS text[]), CAST(:keys AS text[]), CAST(:values AS numeric[])) "
            "ON CONFLICT (grain, period, category, measure, key) DO UPDATE SET value = kpi_values.value + "
            "excluded.value"), dict(zip(("grains", "periods", "categories", "measures", "keys", "values"),
                                        map(list, columns))))

    def make(self, zone: str, now: datetime) -> int:
        """Every cell made again from the facts, in `zone` (the caller holds the lock
        exclusively: `lock_all`). How many values."""
        uow = self._uow
        uow.execute(models.kpi_values.delete())
        always = queries.Scope(datetime(1900, 1, 1, tzinfo=now.tzinfo), datetime(9999, 1, 1, tzinfo=now.tzinfo),
                               None, {}, zone)
        params = {"lo": always.lo, "hi": always.hi, "zone": zone, "now": now, "branches": None,
                  **queries.region_params({})}
        # Day cells from the facts, then every case's ('*') from the categories', then weeks and
        # months from days; each grain written in key order, so that a period's cells share pages.
        uow.execute(sa.text(
            "CREATE TEMPORARY TABLE made_cells ON COMMIT DROP AS "
            "SELECT 'day'::text AS grain, g AS period, c AS category, measure, key, sum(value) AS value FROM ("
            f"{queries.cells_sql(always)}) AS m(g, c, measure, key, value) GROUP BY 2, 3, 4, 5"), params)
        uow.execute(sa.text(
            "INSERT INTO made_cells SELECT 'day', period, '*', measure, key, sum(value) FROM made_cells "
            "GROUP BY 2, 4, 5"))
        for grain in ("week", "month"):
            uow.execute(sa.text(
                f"INSERT INTO made_cells SELECT '{grain}', date_trunc('{grain}', period)::date, category, measure, "
                "key, sum(value) FROM made_cells WHERE grain = 'day' GROUP BY 2, 3, 4, 5"))
        uow.execute(sa.text("INSERT INTO kpi_values (grain, period, category, measure, key, value) "
                            "SELECT * FROM made_cells ORDER BY 1, 2, 3, 4, 5"))
        uow.execute(sa.text("UPDATE kpi_state SET zone = :zone, complete = true, made_at = :now"),
                    {"zone": zone, "now": now})
        return uow.execute(sa.text("SELECT count(*) FROM kpi_values")).scalar()

    def lock_all(self) -> None:
        self._uow.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _ROLLUP_LOCK})

    def state(self):
        return self._uow.execute(sa.text("SELECT zone, complete FROM kpi_state")).first()


class ReportingUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.log = EventLog(self)
        self.cases = CaseFacts(self)
        self.visits = VisitFacts(self)
        self.records = Records(self)
        self.alerts = Alerts(self)
        self.rollups = Rollups(self)


class ReportingStore(Store):
    unit_of_work_class = ReportingUnitOfWork


def refresh_rollups(engine: sa.Engine, zone: str = "Asia/Shanghai", now: datetime | None = None,
                    only_if_needed: bool = False) -> int | None:
    """The KPI cells made again from the facts in `zone` (the chain's: handlers.chain_zone),
    in one transaction that waits for the batches in flight and holds new ones meanwhile. With
    `only_if_needed`, nothing when they are complete in that zone already. How many values
    (None: nothing done)."""
    from datetime import timezone

    with ReportingStore(engine).unit_of_work() as uow:
        if only_if_needed:
            state = uow.rollups.state()
            if state is not None and state.complete and state.zone == zone:
                return None
        uow.rollups.lock_all()
        if only_if_needed:  # another replica may have made them while this one waited
            state = uow.rollups.state()
            if state is not None and state.complete and state.zone == zone:
                return None
        return uow.rollups.make(zone, now or datetime.now(timezone.utc))
