"""Reporting's groundwork (issue 11), pure: a case's facts folded from the events of intake,
investigation and aftercare in any order and any number of times; the alert rules on their
windows; the KPIs over the facts, figures computed by hand."""
import random
import uuid
from datetime import datetime, timedelta, timezone

from services.reporting import alerts, facts, kpis
from services.reporting.alerts import AdverseReaction, Complaint

CASE = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def event(source: str, event_type: str, sequence: int, hours: float, **payload) -> dict:
    return {"event_id": str(uuid.uuid4()), "source": source, "type": event_type, "sequence": sequence,
            "occurred_at": at(hours), "branch_code": "SH001", "correlation_id": CASE,
            "payload": {"case_id": CASE, "complaint_id": CASE, **payload}}


REGISTERED = event("intake", "complaint_registered", 1, 0, kind="complaint", reference="SH001-20261102-0001",
                   channel="phone", category="safety", priority="urgent", severity_flags=["allergy"],
                   received_at=at(0), region="east", first_response_due=at(1), resolution_due=at(168),
                   customer_ref="c-1", service={"code": "HAIR-DYE", "technician_id": "T-017"},
                   products=[{"sku": "DYE-5N", "batch": "B2026-11-03"}])
REMEDY = {"remedy_id": "5b0e6a4c-1111-4222-8333-944455556666", "type": "refund", "amount": 5000.0}
LIFE = [  # an urgent complaint answered late, a refund approved, resolved, reopened, resolved, closed
    REGISTERED,
    event("investigation", "case_opened", 1, 0.01, kind="complaint", category="safety", priority="urgent",
          received_at=at(0), first_response_due=at(1), resolution_due=at(168)),
    event("investigation", "case_assigned", 2, 0.5, owner="INV-7"),
    event("investigation", "sla_breached", 3, 1, clock="first_response", due=at(1), level=1),
    event("investigation", "case_escalated", 4, 1, level=1, to_role="regional_manager"),
    event("investigation", "case_acknowledged", 5, 1.5, channel="phone", within_sla=False),
    event("investigation", "findings_recorded", 6, 20, root_cause="未做皮肤测试", responsibility="ours",
          signed_by="T-001", signed_at=at(20)),
    event("investigation", "remedy_proposed", 7, 21, **REMEDY, status="awaiting_approval"),
    event("investigation", "remedy_approved", 8, 22, **REMEDY),
    event("investigation", "remedy_fulfilled", 9, 30, **REMEDY, fulfilled_at=at(30)),
    event("investigation", "case_resolved", 10, 31, resolved_at=at(31), within_sla=True, reopened=0),
    event("aftercare", "visit_completed", 2, 103, kind="follow_up", visit_id=str(uuid.uuid4()), score=2,
          answers={}),
    event("investigation", "case_reopened", 11, 103, reopened=1, escalation_level=2, resolution_due=at(271)),
    event("investigation", "case_resolved", 12, 150, resolved_at=at(150), within_sla=True, reopened=1),
    event("aftercare", "visit_completed", 4, 222, kind="follow_up", visit_id=str(uuid.uuid4()), score=5,
          answers={}),
    event("investigation", "case_closed", 13, 222, outcome="satisfied", corrective_action=None),
]


def fold(events) -> dict:
    state = facts.new_case(CASE)
    for e in events:
        state = facts.apply(state, e)
    return state


def test_a_case_s_facts_from_its_whole_life():
    f = fold(LIFE)
    assert (f["state"], f["outcome"], f["reopened"], f["escalation_level"]) == ("closed", "satisfied", 1, 2)
    assert (f["category"], f["channel"], f["technician_id"], f["batches"]) == ("safety", "phone", "T-017",
                                                                              ["B2026-11-03"])
    assert f["first_response_at"] == at(1.5) and f["first_response_within_sla"] is False
    assert f["resolved_at"] == at(150) and f["resolution_due"] == at(271) and f["follow_up_score"] == 5
    assert f["breaches"] == {"first_response": 1} and f["responsibility"] == "ours"
    [remedy] = f["remedies"].values()
    assert (remedy["status"], remedy["amount"]) == ("fulfilled", 5000.0)


def test_any_order_and_any_copies_give_the_same_facts():
    expected = fold(LIFE)
    rng = random.Random(11)
    for _ in range(200):
        shuffled = LIFE + rng.sample(LIFE, 5)  # some delivered twice
        rng.shuffle(shuffled)
        assert fold(shuffled) == {**expected, "described_by": "intake"}, shuffled


def test_intake_s_registration_describes_the_complaint_whichever_came_first():
    opened_first = fold([LIFE[1], REGISTERED])
    assert opened_first["channel"] == "phone" and opened_first["reference"] == "SH001-20261102-0001"
    only_case = fold([event("investigation", "case_opened", 1, 0, kind="complaint", category="service",
                            priority="general", received_at=at(0))])
    assert (only_case["category"], only_case["state"], only_case["channel"]) == ("service", "open", None)


def test_recurring_problems_by_branch_category_and_by_technician_in_14_days():
    now = T0 + timedelta(days=20)
    complaints = [Complaint(f"c{i}", branch, category, tech, now - timedelta(days=days))
                  for i, (branch, category, tech, days) in enumerate([
                      ("SH001", "service", "T-1", 1), ("SH001", "service", "T-2", 5), ("SH001", "service", None, 13.9),
                      ("SH001", "service", None, 14.1),  # outside the window
                      ("SH002", "product", "T-1", 2), ("BJ001", "hygiene", "T-1", 3),
                      ("SH002", "service", None, 1)])]
    found = {a.key: a for a in alerts.recurring_problems(complaints, now)}
    assert set(found) == {("branch_category", "SH001", "service"), ("technician", "T-1")}
    assert found[("technician", "T-1")].branches == ("BJ001", "SH001", "SH002")
    assert found[("branch_category", "SH001", "service")].records == ("c2", "c1", "c0")


def test_a_safety_signal_needs_two_reactions_on_one_batch_in_30_days_across_the_chain():
    now = T0 + timedelta(days=40)
    reactions = [AdverseReaction("v1", "SH001", "B-1", "DYE", now - timedelta(days=29)),
                 AdverseReaction("v2", "BJ001", "B-1", "DYE", now - timedelta(days=1)),
                 AdverseReaction("v3", "SH001", "B-2", "DYE", now - timedelta(days=2)),
                 AdverseReaction("v4", "SH001", "B-2", "DYE", now - timedelta(days=31)),
                 AdverseReaction("v5", "GZ001", None, None, now)]
    [signal] = alerts.safety_signals(reactions, now)
    assert signal.key == ("batch", "B-1") and signal.count == 2 and signal.branches == ("BJ001", "SH001")


def test_percentiles_interpolate_as_percentile_cont():
    assert kpis.percentile([], 0.5) is None
    assert kpis.percentile([4, 1, 3, 2], 0.5) == 2.5 and kpis.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == 9.1


def test_percentiles_from_the_buckets_are_within_one_percent_of_the_exact_ones():
    rng = random.Random(3)
    for n in (1, 2, 7, 100, 1000):
        hours = [rng.lognormvariate(1, 1.5) for _ in range(n)]
        histogram: dict = {}
        for h in hours:
            b = kpis.bucket(h * 3600)
            histogram[b] = histogram.get(b, 0) + 1
            assert abs(kpis.bucket_hours(b) - h) <= 0.01 * h or h < 1 / 60
        for q in (0.5, 0.9):
            exact = kpis.percentile(hours, q)
            assert abs(kpis.bucket_percentile(histogram, q) - exact) <= 0.01 * exact, (n, q)
    assert kpis.bucket_percentile({}, 0.5) is None and kpis.bucket(0) == 0 and kpis.bucket(59) == 0
    assert kpis.bucket(60) == 1 and kpis.bucket(61.3) == 2


def test_kpis_of_two_complaints_and_a_praise_by_hand():
    late = fold(LIFE)
    on_time = fold([event("intake", "complaint_registered", 1, 0, kind="complaint", reference="R2", channel="wechat",
                          category="service", priority="general", severity_flags=[], received_at=at(0),
                          region="east", first_response_due=at(24), resolution_due=at(72), customer_ref=None,
                          service=None, products=[]),
                    event("investigation", "case_acknowledged", 2, 2, within_sla=True)])
    praise = fold([event("intake", "feedback_registered", 1, 0, kind="praise", reference="R3", channel="phone",
                         category="praise", priority="low", severity_flags=[], received_at=at(0), region="east",
                         first_response_due=at(72), resolution_due=at(336), customer_ref=None, service=None,
                         products=[])])
    figures = kpis.case_kpis([late, on_time, praise], T0 + timedelta(hours=100))
    assert figures["volume"]["by_kind"] == {"complaint": 2, "praise": 1}
    # First responses: 1.5 h and 2 h. Clocks: late's first response breached, its resolution met
    # (150 h, due 271 h after the reopening); on_time's first response met, its resolution past due at 100 h.
    # (exactly 1.75 and 1.95; from the histogram's buckets, within 1%)
    assert figures["response"]["first_response_hours"] == {"median": 1.75, "p90": 1.94}
    assert figures["response"]["sla_compliance_pct"] == 50.0
    assert figures["response"]["escalations_by_level"] == {"1": 1, "2": 1}
    assert (figures["response"]["resolution_rate_pct"], figures["response"]["reopen_rate_pct"]) == (50.0, 100.0)
    assert figures["satisfaction"] == {"mean_score": 5.0, "share_4_5_pct": 100.0, "praise": 1}
    assert figures["remedies"] == {"count_by_type": {"refund": 1}, "cost_by_type": {"refund": 5000.0},
                                   "promises_kept_pct": None}
    assert figures["closed_loop"] == {"corrective_actions_open": 0, "done_on_time_pct": None, "suggestions": 0,
                                     "suggestions_adopted": 0}


def test_episodes_are_the_runs_of_records_that_fill_a_window_in_any_order():
    day = lambda d: T0 + timedelta(days=d)  # noqa: E731
    times = [day(0), day(10), day(20), day(21), day(40), day(41), day(42), day(70)]
    for seed in range(20):
        shuffled = random.Random(seed).sample(times, len(times))
        runs = alerts.episodes(shuffled, lambda t: t, within=timedelta(days=14), at_least=3)
        # 0, 10, 20 never fall in 14 days together; 10, 20, 21 do; 40-42 do, 28 days later: a new run
        assert runs == [[day(10), day(20), day(21)], [day(40), day(41), day(42)]]
    assert alerts.episodes([day(0), day(14)], lambda t: t, within=timedelta(days=14), at_least=2) == []
    assert alerts.episodes([], lambda t: t, within=timedelta(days=14), at_least=2) == []


VISIT = "0f6b1a2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"


def visit_event(event_type: str, sequence: int, hours: float, **payload) -> dict:
    return {"event_id": str(uuid.uuid4()), "source": "aftercare", "type": event_type, "sequence": sequence,
            "occurred_at": at(hours), "branch_code": "SH002", "correlation_id": "sale-1",
            "payload": {"visit_id": VISIT, "kind": "return", "sale_id": "sale-1", "case_id": None, **payload}}


def test_a_visit_s_facts_in_any_order():
    life = [visit_event("visit_scheduled", 1, 0, due_at=at(48)),
            visit_event("visit_attempted", 2, 49, attempt=1, reached=False, outcome="not_reached"),
            visit_event("visit_attempted", 3, 73, attempt=2, reached=True, outcome="reached"),
            visit_event("visit_completed", 4, 73, score=2, answers={"discomfort": True, "suggestions": "换个时间"}),
            visit_event("adverse_reaction_reported", 5, 73, reported_at=at(73), product={"batch": "B-1"})]
    expected = None
    for seed in range(50):
        state = facts.new_visit(VISIT)
        for e in random.Random(seed).sample(life + life[:2], len(life) + 2):
            state = facts.apply_visit(state, e)
        expected = expected or state
        assert state == expected
    assert (expected["status"], expected["attempts"], expected["reached"], expected["score"]) == (
        "completed", 2, True, 2)
    assert expected["suggestions"] and expected["discomfort"] and expected["adverse_reaction"]
    assert (expected["due_at"], expected["branch_code"], expected["finished_at"]) == (at(48), "SH002", at(73))
