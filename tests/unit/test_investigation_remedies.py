"""Remedies under authority and promises (issue 9's domain), in plain Python against the
default policy: within the proposer's authority a remedy goes ahead, above it waits for a role
that may grant it; a promise is kept by its deadline or broken."""
from datetime import datetime, timedelta, timezone

import pytest

from services.investigation.remedies import APPROVED, AWAITING, FULFILLED, REJECTED, Remedy, RemedyRefused
from shared.calendar.policy import load_policy

RULES = load_policy().sections["investigation"]
T0 = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)


def propose(role="store_manager", **data) -> Remedy:
    data = {"type": "refund", "amount": 5000, "deadline": None, "note": None, **data}
    return Remedy.propose(data, by=f"{role}-1", role=role, now=T0, rules=RULES)


def test_a_refund_of_5000_by_a_store_manager_waits_for_the_regional_manager():
    remedy = propose()
    assert remedy.status == AWAITING and remedy.approvers == ("regional_manager", "hq_admin")
    with pytest.raises(RemedyRefused) as refused:
        remedy.approve(by="sm-2", role="store_manager", now=T0, rules=RULES)
    assert refused.value.needed == "regional_manager" and "regional_manager" in str(refused.value)
    approved = remedy.approve(by="rm-1", role="regional_manager", now=T0 + timedelta(hours=1), rules=RULES)
    assert (approved.status, approved.decided_by) == (APPROVED, "rm-1")


def test_within_the_proposer_s_authority_a_remedy_goes_ahead():
    assert propose(role="front_desk", type="gift", amount=150).status == APPROVED
    assert propose(role="front_desk", type="refund", amount=50).status == AWAITING  # not a type it may grant


def test_a_rejected_remedy_is_done_with():
    rejected = propose().reject(by="rm-1", role="regional_manager", reason="先做退款评估", now=T0, rules=RULES)
    assert (rejected.status, rejected.reason) == (REJECTED, "先做退款评估")
    with pytest.raises(RemedyRefused):
        rejected.approve(by="rm-1", role="regional_manager", now=T0, rules=RULES)


def test_a_redye_is_a_promise_of_10_days_kept_when_fulfilled_by_then():
    redye = propose(type="redye", amount=0)
    assert redye.deadline == T0 + timedelta(days=10) and redye.status == APPROVED
    assert redye.deadline_passed(T0 + timedelta(days=9)) is None
    kept = redye.fulfil(now=T0 + timedelta(days=9))
    assert (kept.status, kept.promise) == (FULFILLED, "kept")


def test_a_promise_not_fulfilled_by_its_deadline_breaks_and_stays_broken():
    redo = propose(role="store_manager", type="redo_service", amount=0)
    broken = redo.deadline_passed(T0 + timedelta(days=3))
    assert broken.promise == "broken" and broken.deadline_passed(T0 + timedelta(days=4)) is None
    late = broken.fulfil(now=T0 + timedelta(days=5))
    assert (late.status, late.promise) == (FULFILLED, "broken")


def test_a_deadline_given_must_be_ahead():
    with pytest.raises(RemedyRefused) as refused:
        propose(type="redye", amount=0, deadline=T0 - timedelta(hours=1))
    assert "deadline" in refused.value.fields


def test_medical_expenses_wait_for_hq_admin_whatever_the_amount():
    remedy = propose(role="regional_manager", type="medical_expense", amount=1)
    assert remedy.approvers == ("hq_admin",)


def test_a_policy_promise_runs_from_its_approval_and_a_given_deadline_passed_is_refused():
    redo = propose(role="investigator", type="redo_service", amount=0)  # no authority of its own: waits
    assert redo.status == AWAITING and redo.deadline == T0 + timedelta(days=3)
    approved = redo.approve(by="sm-1", role="store_manager", now=T0 + timedelta(days=4), rules=RULES)
    assert approved.deadline == T0 + timedelta(days=7)  # the policy's 3 days, from the approval
    given = propose(role="investigator", type="redo_service", amount=0, deadline=T0 + timedelta(days=1))
    with pytest.raises(RemedyRefused) as refused:
        given.approve(by="sm-1", role="store_manager", now=T0 + timedelta(days=2), rules=RULES)
    assert "deadline" in refused.value.fields


def test_a_promise_waits_with_the_customer_and_amounts_read_to_the_fen():
    redye = propose(type="redye", amount=0)
    assert redye.postponed(timedelta(days=5)).deadline == T0 + timedelta(days=15)
    assert redye.fulfil(now=T0).postponed(timedelta(days=5)).deadline == T0 + timedelta(days=10)  # kept: stays
    with pytest.raises(RemedyRefused) as refused:
        propose(amount=1234567.89).approve(by="rm", role="regional_manager", now=T0, rules=RULES)
    assert "1234567.89 CNY" in str(refused.value)
