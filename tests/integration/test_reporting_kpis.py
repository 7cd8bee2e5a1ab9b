"""Reporting's KPI SQL on PostgreSQL against the same figures computed in Python over the same
folded facts (services/reporting/kpis.py, itself checked by hand in the unit tests): a random
chain of a few hundred cases, every grouping, a branch's scope, a period's edges."""
import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from services.reporting import handlers, kpis, queries, repository
from services.reporting.policy import ReportingRules
from services.reporting.repository import ReportingStore
from shared.persistence import db

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
START = NOW - timedelta(days=40)
SHANGHAI = ZoneInfo("Asia/Shanghai")
BRANCHES = {"SH001": "east", "SH002": "east", "BJ001": "north"}
CATEGORIES = ("service_quality", "product_quality", "hygiene_environment", "booking", "safety")


def iso(t: datetime) -> str:
    return t.isoformat()


def envelope(source, event_type, record_id, sequence, t, branch, **payload) -> dict:
    return {"event_id": str(uuid.uuid4()), "source": source, "type": event_type, "sequence": sequence,
            "occurred_at": iso(t), "branch_code": branch, "correlation_id": record_id, "payload": payload}


def random_case(rng: random.Random) -> list[dict]:
    """One case's events: a complaint (mostly), suggestion or praise, worked more or less well."""
    case_id, branch = str(uuid.uuid4()), rng.choice(sorted(BRANCHES))
    kind = rng.choices(("complaint", "suggestion", "praise", "inquiry"), (8, 1, 1, 2))[0]
    received = START + timedelta(minutes=rng.randrange(40 * 24 * 60))
    priority = "low" if kind != "complaint" else rng.choice(("urgent", "general", "general"))
    first_due = received + timedelta(hours={"urgent": 1, "general": 24, "low": 72}[priority])
    resolution_due = received + timedelta(days=7)
    ids = {"case_id": case_id, "complaint_id": case_id}
    seq = iter(range(1, 100))
    tech = rng.choice(("T-1", "T-2", "T-3", None))
    events = [envelope("intake", "complaint_registered" if kind == "complaint" else "feedback_registered", case_id,
                       1, received, branch, complaint_id=case_id, kind=kind, reference=f"{branch}-{case_id[:6]}",
                       channel=rng.choice(("phone", "wechat", "front_desk")), priority=priority,
                       category=rng.choice(CATEGORIES) if kind == "complaint" else kind, severity_flags=[],
                       received_at=iso(received), region=BRANCHES[branch], first_response_due=iso(first_due),
                       resolution_due=iso(resolution_due), customer_ref="c", customer_masked={"name": "王**"},
                       service={"code": "S", "technician_id": tech} if tech else None, products=[])]
    events.append(envelope("investigation", "case_opened", case_id, next(seq), received, branch, **ids, kind=kind))
    if kind == "inquiry" and rng.random() < 0.3:  # converted into a complaint: one of intake's or investigation's
        converted = {**events[0]["payload"], "kind": "complaint", "category": rng.choice(CATEGORIES),
                     "priority": "general", "converted_from": "inquiry", "converted_at": iso(received)}
        if rng.random() < 0.7:
            events.append(envelope("intake", "complaint_registered", case_id, 2, received, branch, **converted))
        if rng.random() < 0.7:
            events.append(envelope("investigation", "case_converted", case_id, next(seq), received, branch, **ids,
                                   from_kind="inquiry", kind="complaint", category=converted["category"],
                                   priority="general", received_at=iso(received),
                                   first_response_due=iso(first_due), resolution_due=iso(resolution_due)))
    if rng.random() < 0.6:
        events.append(envelope("investigation", "case_assigned", case_id, next(seq), received, branch, **ids,
                               owner=rng.choice(("M-1", "M-2"))))
    t = received
    if rng.random() < 0.85:
        t = received + timedelta(minutes=rng.randrange(1, 40 * 60))
        events.append(envelope("investigation", "case_acknowledged", case_id, next(seq), t, branch, **ids,
                               within_sla=t <= first_due))
        if t > first_due:
            level = rng.choice((1, 2))
            events.append(envelope("investigation", "case_escalated", case_id, next(seq), t, branch, **ids,
                                   level=level, to_role="regional_manager"))
    if kind == "complaint" and rng.random() < 0.6:
        remedy = {"remedy_id": str(uuid.uuid4()), "type": rng.choice(("refund", "gift", "redo_service")),
                  "amount": float(rng.randrange(0, 3000))}
        events.append(envelope("investigation", "remedy_proposed", case_id, next(seq), t, branch, **ids, **remedy,
                               status="approved"))
        if rng.random() < 0.8:
            events.append(envelope("investigation", "remedy_approved", case_id, next(seq), t, branch, **ids, **remedy))
            if rng.random() < 0.5:
                events.append(envelope("investigation", rng.choice(("promise_kept", "promise_broken")), case_id,
                                       next(seq), t, branch, **ids, **remedy))
    if rng.random() < 0.6:
        resolved = t + timedelta(hours=rng.randrange(1, 300))
        if resolved < NOW:
            events.append(envelope("investigation", "case_resolved", case_id, next(seq), resolved, branch, **ids,
                                   resolved_at=iso(resolved), within_sla=resolved <= resolution_due, reopened=0))
            if rng.random() < 0.5:
                events.append(envelope("aftercare", "visit_completed", str(uuid.uuid4()), 3, resolved, branch,
                                       visit_id=str(uuid.uuid4()), kind="follow_up", case_id=case_id,
                                       score=rng.randrange(1, 6), answers={}))
            if rng.random() < 0.2:
                events.append(envelope("investigation", "case_reopened", case_id, next(seq), resolved, branch, **ids,
                                       reopened=1, escalation_level=2))
    if kind == "complaint" and rng.random() < 0.2:
        due = received + timedelta(days=10)
        events.append(envelope("investigation", "corrective_action_opened", case_id, next(seq), t, branch, **ids,
                               due=iso(due), owner="M-1"))
        if rng.random() < 0.5:
            done = received + timedelta(days=rng.randrange(1, 15))
            events.append(envelope("investigation", "corrective_action_closed", case_id, next(seq), done, branch,
                                   **ids, due=iso(due), owner="M-1", done_at=iso(done), on_time=done <= due))
    if kind == "suggestion" and rng.random() < 0.7:
        events.append(envelope("investigation", "suggestion_decided", case_id, next(seq), t, branch, **ids,
                               decision=rng.choice(("adopted", "declined"))))
    return events


@pytest.fixture
def chain(database_factory):
    rng = random.Random(5)
    events = [e for _ in range(400) for e in random_case(rng)]
    rng.shuffle(events)
    store = ReportingStore(db.make_engine(database_factory("reporting"), 2))
    repository.refresh_rollups(store.engine, "Asia/Shanghai", NOW)  # none yet: each batch keeps them
    for i in range(0, len(events), 97):
        handlers.ingest(store, events=events[i:i + 97], rules=ReportingRules(), now=NOW)
    with store.engine.connect() as conn:
        folded = [row.facts for row in conn.execute(sa.text("SELECT facts FROM case_facts"))]
    yield store, folded
    store.engine.dispose()


CASE_SECTIONS = ("response", "satisfaction", "remedies", "closed_loop", "inquiries")


def expected(folded: list[dict], key, lo: datetime, hi: datetime, branches=None) -> dict:
    groups = defaultdict(list)
    for f in folded:
        received = datetime.fromisoformat(f["received_at"])
        if lo <= received < hi and (branches is None or f["branch_code"] in branches):
            groups[key(f)].append(f)
    return {g: kpis.case_kpis(cases, NOW) for g, cases in groups.items()}


def close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 0.011
    return a == b


def check(store, folded, group_by, key, lo=START, hi=NOW, branches=None):
    scope = queries.Scope(lo, hi, branches, BRANCHES, "Asia/Shanghai")
    with store.engine.connect() as conn:
        got = queries.kpis(conn, scope, group_by, NOW)
    want = expected(folded, key, lo, hi, branches)
    assert sorted(got) == sorted(want), group_by
    for g, figures in want.items():
        for section in CASE_SECTIONS:
            assert close(got[g][section], figures[section]), (group_by, g, section, got[g][section], figures[section])
        cases_only = lambda volume: {k: v for k, v in volume.items()  # noqa: E731
                                     if k not in ("services", "complaints_per_100_services")}
        assert cases_only(got[g]["volume"]) == cases_only(figures["volume"]), (group_by, g)
    return got


def local_day(f) -> str:
    return datetime.fromisoformat(f["received_at"]).astimezone(SHANGHAI).strftime("%Y-%m-%d")


def test_every_grouping_gives_the_figures_computed_over_the_facts(chain):
    store, folded = chain
    assert len(folded) == 400
    converted = [f for f in folded if f["converted_from"] == "inquiry"]
    assert converted and {f["kind"] for f in converted} == {"complaint"}
    assert any(f["kind"] == "inquiry" and f["first_response_at"] for f in folded)
    check(store, folded, None, lambda f: "all")
    check(store, folded, "branch", lambda f: f["branch_code"])
    check(store, folded, "region", lambda f: BRANCHES[f["branch_code"]])
    check(store, folded, "category", lambda f: f["category"])
    check(store, folded, "technician", lambda f: f["technician_id"] or "")
    check(store, folded, "handler", lambda f: f["owner"] or "")
    check(store, folded, "day", local_day)
    monday = lambda f: (datetime.fromisoformat(f["received_at"]).astimezone(SHANGHAI).date()  # noqa: E731
                        - timedelta(days=datetime.fromisoformat(f["received_at"]).astimezone(SHANGHAI).weekday()))
    check(store, folded, "week", lambda f: monday(f).isoformat())
    check(store, folded, "month", lambda f: local_day(f)[:8] + "01")


def test_a_branch_scope_and_a_period_count_only_their_cases(chain):
    store, folded = chain
    lo, hi = START + timedelta(days=10, hours=5), START + timedelta(days=20)
    got = check(store, folded, "branch", lambda f: f["branch_code"], lo, hi, frozenset({"SH002"}))
    assert list(got) == ["SH002"]
    assert check(store, folded, None, lambda f: "all", NOW + timedelta(days=1), NOW + timedelta(days=2)) == {}


def cells(store) -> dict:
    with store.engine.connect() as conn:
        return {tuple(r[:5]): r[5] for r in conn.execute(sa.text(
            "SELECT grain, period, category, measure, key, value FROM kpi_values WHERE value <> 0"))}


def test_the_kpi_cells_answer_whole_days_of_the_chain_as_the_facts_do(chain):
    store, folded = chain
    lo, hi = datetime(2026, 10, 19, tzinfo=SHANGHAI), datetime(2026, 11, 24, tzinfo=SHANGHAI)
    everywhere = queries.Scope(lo, hi, None, BRANCHES, "Asia/Shanghai")
    # Every branch named: the same period read from the facts.
    named = queries.Scope(lo, hi, frozenset(BRANCHES), BRANCHES, "Asia/Shanghai")
    monday = lambda f: (datetime.fromisoformat(f["received_at"]).astimezone(SHANGHAI).date()  # noqa: E731
                        - timedelta(days=datetime.fromisoformat(f["received_at"]).astimezone(SHANGHAI).weekday()))
    with store.engine.connect() as conn:
        assert queries.cells_usable(conn, everywhere, None) and not queries.cells_usable(conn, named, None)
        assert not queries.cells_usable(conn, queries.Scope(lo, NOW, None, BRANCHES, "Asia/Shanghai"), None)
        assert not queries.cells_usable(conn, everywhere, "branch")
        assert not queries.cells_usable(conn, queries.Scope(lo, hi, None, BRANCHES, "Europe/Paris"), None)
    for group_by, key in ((None, lambda f: "all"), ("category", lambda f: f["category"]), ("day", local_day),
                          ("week", lambda f: monday(f).isoformat()), ("month", lambda f: local_day(f)[:8] + "01")):
        from_cells = check(store, folded, group_by, key, lo, hi)
        with store.engine.connect() as conn:
            assert from_cells == queries.kpis(conn, named, group_by, NOW), group_by


def test_the_cells_each_batch_keeps_are_the_cells_made_from_the_facts(chain):
    store, _ = chain
    kept = cells(store)
    assert {grain for grain, *_ in kept} == {"day", "week", "month"} and len(kept) > 1000
    assert repository.refresh_rollups(store.engine, "Asia/Shanghai", NOW, only_if_needed=True) is None
    repository.refresh_rollups(store.engine, "Asia/Shanghai", NOW)
    assert cells(store) == kept
    # The rebuild makes them again too.
    handlers.rebuild(store, rules=ReportingRules(), now=NOW, zone="Asia/Shanghai")
    assert cells(store) == kept


def test_two_replicas_keeping_the_cells_at_once_keep_them_right(database_factory):
    """Two consumers fold batches of the same cases and days concurrently (in any order, each
    event once or twice): the cells they kept are the cells made from the facts after."""
    import eventlet

    rng = random.Random(8)
    events = [e for _ in range(150) for e in random_case(rng)]
    rng.shuffle(events)
    store = ReportingStore(db.make_engine(database_factory("reporting"), 4))
    repository.refresh_rollups(store.engine, "Asia/Shanghai", NOW)
    halves = [events[0::2] + events[:40], events[1::2]]

    def consume(mine: list[dict]) -> None:
        for i in range(0, len(mine), 23):
            handlers.ingest(store, events=mine[i:i + 23], rules=ReportingRules(), now=NOW)

    for replica in [eventlet.spawn(consume, half) for half in halves]:
        replica.wait()
    kept = cells(store)
    repository.refresh_rollups(store.engine, "Asia/Shanghai", NOW)
    assert cells(store) == kept
    store.engine.dispose()


def test_cells_made_in_another_zone_wait_to_be_made_again(chain):
    from shared.calendar.policy import load_policy

    store, folded = chain
    lo, hi = datetime(2026, 10, 19, tzinfo=SHANGHAI), datetime(2026, 11, 24, tzinfo=SHANGHAI)
    policy = load_policy(None)
    zone = str(handlers.chain_zone(policy))
    assert zone == "Asia/Shanghai"
    # The policy's zone is the cells' zone: nothing to do.
    assert handlers.make_cells(store, policy=policy, now=NOW) is None
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE kpi_state SET zone = 'Europe/Paris'"))
        scope = queries.Scope(lo, hi, None, BRANCHES, "Asia/Shanghai")
        assert not queries.cells_usable(conn, scope, None)
    check(store, folded, None, lambda f: "all", lo, hi)  # read from the rows meanwhile
    assert handlers.make_cells(store, policy=policy, now=NOW) > 1000
    with store.engine.connect() as conn:
        assert queries.cells_usable(conn, scope, None)
    check(store, folded, None, lambda f: "all", lo, hi)


def test_a_batch_that_waited_while_the_cells_were_made_adds_to_them(database_factory):
    """A batch that starts while the cells are being made waits for them, then adds its changes
    (found by killing reporting mid-batch: it read the cells' state before its wait and left its
    changes out)."""
    import time

    import eventlet

    rng = random.Random(9)
    events = [e for _ in range(30) for e in random_case(rng)]
    store = ReportingStore(db.make_engine(database_factory("reporting"), 4))
    with store.unit_of_work() as maker:
        maker.rollups.lock_all()  # a making of the cells under way
        batch = eventlet.spawn(handlers.ingest, store, events=events, rules=ReportingRules(), now=NOW)
        deadline = time.monotonic() + 10
        with store.engine.connect() as conn:
            while not conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                           "AND NOT granted")).scalar():
                assert time.monotonic() < deadline, "the batch never waited for the making"
                eventlet.sleep(0.01)
        maker.rollups.make("Asia/Shanghai", NOW)
    assert batch.wait() == len(events)
    kept = cells(store)
    assert kept
    repository.refresh_rollups(store.engine, "Asia/Shanghai", NOW)
    assert cells(store) == kept
    store.engine.dispose()
