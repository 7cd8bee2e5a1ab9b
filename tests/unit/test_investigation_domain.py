"""Investigation's domain rules in plain Python: SLA clocks (warning, breach levels, opening
hours, pauses), escalation up the policy's ladder, what each task does to the case."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.investigation.domain import Actor, Case, CaseRuleBroken, CaseStateConflict, OpenTask, SlaClock
from shared.calendar.policy import load_policy
from shared.testing.samples import complaint_event

POLICY = load_policy()
RULES = POLICY.sections["investigation"]
SH001 = POLICY.branch("SH001")
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
MANAGER = Actor("SM-1", "store_manager")


def opened(priority="urgent", received=T0, first=timedelta(hours=1), resolution=timedelta(days=7)) -> Case:
    payload = dict(complaint_event()["payload"])
    payload.update(priority=priority, received_at=received.isoformat(),
                   first_response_due=(received + first).isoformat(),
                   resolution_due=(received + resolution).isoformat())
    return Case.open(payload, branch=SH001, rules=RULES, now=received, process="complaint_case@abc")


def test_an_urgent_clock_warns_at_80_percent_and_escalates_every_target_length_around_the_clock():
    clock = SlaClock.plan("first_response", T0, T0 + timedelta(hours=1), urgent=True, branch=SH001,
                          warning_at=0.8, levels=2)
    assert clock.warning_at == T0 + timedelta(minutes=48)
    assert clock.escalations == (T0 + timedelta(hours=1), T0 + timedelta(hours=2))


def test_a_general_clock_warns_at_80_percent_of_the_opening_hours_before_its_deadline():
    start = datetime(2026, 11, 22, 21, 30, tzinfo=SHANGHAI)
    due = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)  # intake moved 10 hours later (07:30) to opening
    clock = SlaClock.plan("first_response", start, due, urgent=False, branch=SH001, warning_at=0.8, levels=2)
    # Open 30 minutes of it (21:30-22:00): the warning after 24 of them, while someone can act.
    assert clock.warning_at.astimezone(SHANGHAI) == datetime(2026, 11, 22, 21, 54, tzinfo=SHANGHAI)
    assert clock.escalations[0] == due  # the deadline is intake's
    # One target later is 22:30, after closing: the next level comes when the branch opens again.
    assert clock.escalations[1].astimezone(SHANGHAI) == datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)


def test_a_general_clock_across_a_holiday_counts_only_the_open_days():
    # SH001 closes 2027-02-06..12 (Spring Festival); a complaint at 12:00 on the 5th, due 7 days later.
    start = datetime(2027, 2, 5, 12, 0, tzinfo=SHANGHAI)
    due = datetime(2027, 2, 13, 10, 0, tzinfo=SHANGHAI)
    assert SH001.open_time_between(start, due) == timedelta(hours=10)
    clock = SlaClock.plan("resolution", start, due, urgent=False, branch=SH001, warning_at=0.8, levels=2)
    assert clock.warning_at.astimezone(SHANGHAI) == datetime(2027, 2, 5, 20, 0, tzinfo=SHANGHAI)
    assert SH001.after_open_time(start, timedelta(hours=11)).astimezone(SHANGHAI) == \
        datetime(2027, 2, 13, 11, 0, tzinfo=SHANGHAI)


def test_the_warning_is_recorded_once_and_addressed_to_the_branch():
    case = opened()
    case.clock_warning("first_response", T0 + timedelta(minutes=48), RULES)
    case.clock_warning("first_response", T0 + timedelta(minutes=50), RULES)
    assert [e.type for _, e in case.pull_events()] == ["case_opened", "sla_warning"]
    [notice] = case.notices
    assert (notice.role, notice.branch, notice.region) == ("store_manager", "SH001", None)


def test_breach_levels_escalate_up_the_ladder_and_never_down():
    case = opened()
    case.pull_events()
    case.clock_breached("first_response", 1, T0 + timedelta(hours=1), RULES)
    case.clock_breached("first_response", 1, T0 + timedelta(hours=1), RULES)  # the same timer again: nothing
    case.clock_breached("first_response", 2, T0 + timedelta(hours=2), RULES)
    escalations = [e.fields for _, e in case.pull_events() if e.type == "case_escalated"]
    assert [(e["level"], e["to_role"], e["to_region"]) for e in escalations] == [
        (1, "regional_manager", "east"), (2, "hq_admin", None)]
    assert case.escalation_level == 2
    # The resolution clock breaching at level 1 later reminds HQ, the level the case is at; no event goes down.
    case.clock_breached("resolution", 1, T0 + timedelta(days=7), RULES)
    assert [e.type for _, e in case.pull_events()] == ["sla_breached"]
    assert case.notices[-1].role == "hq_admin" and case.escalation_level == 2


def test_a_stopped_clock_neither_warns_nor_breaches():
    case = opened()
    case.complete("respond", {"message": "您好", "channel": "phone"}, MANAGER, T0 + timedelta(minutes=10))
    case.pull_events()
    case.clock_warning("first_response", T0 + timedelta(minutes=48), RULES)
    case.clock_breached("first_response", 1, T0 + timedelta(hours=1), RULES)
    assert case.pull_events() == [] and case.clocks["first_response"].state(T0 + timedelta(hours=3)) == "met"


def test_a_response_by_sms_asks_intake_to_send_it_and_by_phone_only_records_it():
    by_sms, by_phone = opened(), opened()
    by_sms.complete("respond", {"message": "已收到", "channel": "sms"}, MANAGER, T0)
    by_phone.complete("respond", {"message": "已电话告知", "channel": "phone"}, MANAGER, T0)
    kinds = lambda case: [type(e).__name__ for _, e in case.pull_events()]  # noqa: E731
    assert kinds(by_sms) == ["CaseEvent", "CustomerMessage", "CaseEvent"]
    assert kinds(by_phone) == ["CaseEvent", "CaseEvent"]


def test_waiting_for_the_customer_moves_every_running_deadline_on_by_the_pause():
    case = opened(priority="urgent")
    case.complete("respond", {"message": "x", "channel": "phone"}, MANAGER, T0 + timedelta(minutes=5))
    before = case.clocks["resolution"]
    case.pause("顾客出差", MANAGER, T0 + timedelta(days=1))
    assert case.next_due() is None and case.clocks["resolution"].view(T0 + timedelta(days=9), case.paused_since)[
        "remaining_seconds"] == int((before.due - (T0 + timedelta(days=1))).total_seconds())
    with pytest.raises(CaseStateConflict):
        case.pause("again", MANAGER, T0 + timedelta(days=2))
    case.resume(MANAGER, T0 + timedelta(days=4), SH001)
    after = case.clocks["resolution"]
    assert after.due - before.due == timedelta(days=3) and after.warning_at - before.warning_at == timedelta(days=3)
    assert case.clocks["first_response"].due == before.due - timedelta(days=7) + timedelta(hours=1)  # met: unmoved
    assert after.paused_seconds == 3 * 86400


def test_a_pause_before_the_first_response_is_refused():
    with pytest.raises(CaseRuleBroken):
        opened().pause("no", MANAGER, T0)


def test_findings_cannot_be_signed_before_the_complaint_was_received():
    with pytest.raises(CaseRuleBroken) as refused:
        opened().complete("record_findings", {"facts": "f", "service_log_checked": True, "product_batch_checked": True,
                                              "root_cause": "r", "responsibility": "ours", "signed_by": "T",
                                              "signed_at": T0 - timedelta(days=1)}, MANAGER, T0)
    assert "signed_at" in refused.value.fields


def test_who_may_complete_a_task_is_its_roles_or_the_owner_when_the_process_says_so():
    case = opened()
    case.owner = "INV-7"
    respond = OpenTask.from_properties("respond", None, {"roles": "store_manager,investigator",
                                                         "owner_may_complete": "true", "clock": "first_response"})
    assign = OpenTask.from_properties("assign", None, {"roles": "store_manager", "owner_may_complete": "false"})
    assert case.may_complete(respond, Actor("INV-7", "front_desk"), RULES)
    assert not case.may_complete(assign, Actor("INV-7", "front_desk"), RULES)
    assert not case.may_complete(respond, Actor("FD-2", "front_desk"), RULES)
    assert case.may_complete(respond, Actor("X", "investigator"), RULES)


def test_clocks_survive_their_json_form():
    clock = opened().clocks["resolution"]
    assert SlaClock.from_json("resolution", clock.to_json()) == clock


# -- remedy authority (policy data) ----------------------------------------------------------------

@pytest.mark.parametrize("role, remedy_type, amount, may", [
    ("front_desk", "gift", 200, True), ("front_desk", "gift", 201, False), ("front_desk", "refund", 50, False),
    ("front_desk", "redo_service", 0, True), ("store_manager", "refund", 2000, True),
    ("store_manager", "refund", 5000, False), ("regional_manager", "refund", 5000, True),
    ("regional_manager", "medical_expense", 100, False), ("hq_admin", "medical_expense", 100, True),
    ("hq_admin", "refund", 10 ** 7, True), ("investigator", "apology", 0, False),
])
def test_who_may_grant_a_remedy_is_the_policy_s_table_by_role_type_and_amount(role, remedy_type, amount, may):
    assert RULES.may_grant(role, remedy_type, amount) is may


def test_a_remedy_above_the_proposer_waits_for_the_lowest_role_whose_authority_covers_it():
    assert RULES.approvers("refund", 5000) == ("regional_manager", "hq_admin")
    assert RULES.approvers("gift", 150) == ("front_desk", "store_manager", "regional_manager", "hq_admin")
    assert RULES.approvers("medical_expense", 10) == ("hq_admin",)
