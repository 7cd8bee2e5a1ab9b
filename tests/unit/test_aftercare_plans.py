"""Aftercare's plans (issue 10's domain), against the default policy: a sale plans a visit per
day its items fall due, inside the branch's contact hours; no consent, no visit; a resolved case
plans its follow-up 3 days later; the same event plans the same visits."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from services.aftercare.domain import contact_time, plan_follow_up, plan_return_visits
from shared.calendar.policy import load_policy

POLICY = load_policy()
RULES, BRANCH = POLICY.sections["aftercare"], POLICY.branch("SH001")
SHANGHAI = ZoneInfo("Asia/Shanghai")
SALE_ID, CASE_ID = "0d8c6a3e-1f0b-4c7e-9a55-2f4b8e6c1d01", "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"


def sale(sold_at: datetime, *types: str, consent: bool = True) -> dict:
    return {"sale_id": SALE_ID, "sold_at": sold_at.isoformat(), "contact_consent": consent, "customer_ref": "c-1",
            "customer_masked": {"name": "王**"},
            "items": [{"type": "service" if t in ("hair_colour", "perm", "treatment") else "product",
                       "product_type": t, "batch": f"B-{t}"} for t in types]}


def test_a_hair_colour_sale_is_visited_two_days_later_at_the_same_hour_as_an_allergy_check():
    [visit] = plan_return_visits(sale(datetime(2026, 11, 20, 15, 0, tzinfo=SHANGHAI), "hair_colour"),
                                 branch=BRANCH, rules=RULES)
    assert visit.due_at == datetime(2026, 11, 22, 15, 0, tzinfo=SHANGHAI)
    assert (visit.kind, visit.allergy_check, visit.correlation_id) == ("return", True, SALE_ID)


def test_a_due_time_outside_contact_hours_moves_to_the_next_contact_hour_never_at_night():
    late = plan_return_visits(sale(datetime(2026, 11, 20, 21, 30, tzinfo=SHANGHAI), "hair_colour"),
                              branch=BRANCH, rules=RULES)[0]
    assert late.due_at == datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)
    early = contact_time(datetime(2026, 11, 22, 0, 30, tzinfo=timezone.utc), BRANCH, RULES)  # 08:30 local
    assert early == datetime(2026, 11, 22, 9, 0, tzinfo=SHANGHAI)
    assert contact_time(datetime(2026, 11, 22, 13, 0, tzinfo=timezone.utc), BRANCH, RULES) == \
        datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)  # 21:00 local is outside
    assert contact_time(datetime(2026, 11, 22, 12, 59, tzinfo=timezone.utc), BRANCH, RULES) == \
        datetime(2026, 11, 22, 20, 59, tzinfo=SHANGHAI)  # 20:59 is inside


def test_items_due_the_same_day_make_one_visit_and_others_their_own():
    visits = plan_return_visits(sale(datetime(2026, 11, 20, 11, 0, tzinfo=SHANGHAI), "hair_colour", "perm",
                                     "skincare", "cosmetics", "other"), branch=BRANCH, rules=RULES)
    assert [(v.due_at.date().isoformat(), sorted(i["product_type"] for i in v.items)) for v in visits] == [
        ("2026-11-22", ["hair_colour", "perm"]), ("2026-11-27", ["skincare"]), ("2026-12-04", ["cosmetics"])]
    assert [v.allergy_check for v in visits] == [True, False, False]
    again = plan_return_visits(sale(datetime(2026, 11, 20, 11, 0, tzinfo=SHANGHAI), "hair_colour", "perm",
                                    "skincare", "cosmetics"), branch=BRANCH, rules=RULES)
    assert [v.id for v in again] == [v.id for v in visits]  # a duplicated event plans the same visits


def test_no_consent_no_visit():
    assert plan_return_visits(sale(datetime(2026, 11, 20, 11, 0, tzinfo=SHANGHAI), "hair_colour", consent=False),
                              branch=BRANCH, rules=RULES) == []


def test_a_resolved_case_is_followed_up_three_days_later_in_contact_hours_and_each_round_on_its_own():
    resolved = {"case_id": CASE_ID, "resolved_at": datetime(2026, 11, 20, 21, 30, tzinfo=SHANGHAI).isoformat(),
                "reopened": 0, "customer_ref": "c-1"}
    visit = plan_follow_up(resolved, branch=BRANCH, rules=RULES)
    assert visit.due_at == datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)  # 21:30 + 3 days is after hours
    assert (visit.kind, visit.correlation_id, visit.sale_id) == ("follow_up", CASE_ID, None)
    assert plan_follow_up(resolved, branch=BRANCH, rules=RULES).id == visit.id
    assert plan_follow_up({**resolved, "reopened": 1}, branch=BRANCH, rules=RULES).id != visit.id
    assert RULES.follow_up_after == timedelta(days=3) and RULES.call_attempts == 3
