"""An agent's claim on a visit, in memory (the domain's rule; the one-statement race is the
repository's, tested end to end in tests/e2e/test_aftercare_claims.py): a colleague's running
claim keeps others off and names them, the same agent extends theirs, a claim runs out on the
clock, an attempt or the visit finishing ends it, only its agent releases it; and the policy's
default length (`aftercare.claim_for`), PT1M to PT60M."""
from datetime import timedelta

import pytest
import yaml

from services.aftercare.domain import Actor, Claim
from services.aftercare.exceptions import VisitClaimed, VisitStateConflict
from services.aftercare.policy import CLAIM_FOR
from shared.calendar.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
from tests.unit.test_aftercare_visits import ANSWERS, BRANCH, DUE, RULES, attempt, return_visit

ANN, BO = Actor("ann", "aftercare_agent"), Actor("bo", "aftercare_agent")
NOW = DUE + timedelta(minutes=5)


def test_a_running_claim_keeps_colleagues_off_and_names_who_until_when():
    visit = return_visit()
    claim = visit.claim_for(ANN, NOW, RULES.claim_for)
    assert claim == Claim("ann", NOW + timedelta(minutes=10)) and visit.claimed(NOW) == claim
    with pytest.raises(VisitClaimed) as refused:
        visit.claim_for(BO, NOW + timedelta(minutes=9, seconds=59), RULES.claim_for)
    assert (refused.value.by, refused.value.until) == ("ann", NOW + timedelta(minutes=10))
    assert "being called by ann until" in str(refused.value) and isinstance(refused.value, VisitStateConflict)
    assert visit.view(NOW, BRANCH)["claimed_by"] == "ann"
    assert visit.view(NOW, BRANCH)["claimed_until"] == "2026-11-22T07:15:00Z"
    assert visit.claim_ended is False and visit.pull_events() == []  # a claim is no event on the bus


def test_the_same_agent_extends_and_a_claim_run_out_is_nobody_s():
    visit = return_visit()
    visit.claim_for(ANN, NOW, timedelta(minutes=10))
    assert visit.claim_for(ANN, NOW + timedelta(minutes=8), timedelta(minutes=10)).until == NOW + timedelta(minutes=18)
    ended = NOW + timedelta(minutes=18)
    assert visit.claimed(ended) is None and visit.claim.running(ended) is False
    assert visit.view(ended, BRANCH)["claimed_by"] is None and visit.view(ended, BRANCH)["claimed_until"] is None
    assert visit.claim_for(BO, ended, timedelta(minutes=1)) == Claim("bo", ended + timedelta(minutes=1))


def test_an_attempt_ends_the_claim_whoever_records_it_and_a_finished_visit_is_claimed_no_more():
    visit = return_visit()
    visit.claim_for(ANN, NOW, RULES.claim_for)
    attempt(visit, NOW, outcome="not_reached")
    assert visit.claim is None and visit.claim_ended and visit.view(NOW, BRANCH)["claimed_by"] is None
    visit.claim_for(BO, NOW + timedelta(days=1), RULES.claim_for)
    assert visit.claim_ended is False  # a new claim: what is stored is the claim, not its end
    attempt(visit, NOW + timedelta(days=1), outcome="reached", answers=ANSWERS)
    assert visit.status == "completed" and visit.claim is None and visit.claim_ended
    with pytest.raises(VisitStateConflict) as refused:
        visit.claim_for(ANN, NOW + timedelta(days=1), RULES.claim_for)
    assert not isinstance(refused.value, VisitClaimed) and "completed" in str(refused.value)


def test_abandoning_or_cancelling_ends_the_claim():
    abandoned, cancelled = return_visit(), return_visit()
    for visit in (abandoned, cancelled):
        visit.claim_for(ANN, NOW, RULES.claim_for)
    abandoned.abandon(NOW + timedelta(minutes=1))
    cancelled.cancel("case_reopened", NOW + timedelta(minutes=1))
    assert abandoned.claim is cancelled.claim is None and abandoned.claim_ended and cancelled.claim_ended
    assert abandoned.claimed(NOW) is None


def test_only_its_agent_releases_a_running_claim():
    visit = return_visit()
    assert visit.release(ANN, NOW) is False and visit.claim_ended is False  # nothing to release
    visit.claim_for(ANN, NOW, RULES.claim_for)
    with pytest.raises(VisitClaimed):
        visit.release(BO, NOW)
    assert visit.release(BO, NOW + timedelta(minutes=10)) is False  # ann's ran out: nothing of bo's to end
    visit.claim_for(ANN, NOW, RULES.claim_for)
    assert visit.release(ANN, NOW) is True and visit.claim is None and visit.claim_ended


def test_the_policy_says_how_long_a_claim_lasts_from_one_minute_to_an_hour(tmp_path):
    assert load_policy().section("aftercare").claim_for == CLAIM_FOR == timedelta(minutes=10)
    doc = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))

    def with_claim_for(value):
        changed = {**doc, "aftercare": {**doc["aftercare"], "claim_for": value}}
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(changed, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return load_policy(path)

    assert with_claim_for("PT25M").section("aftercare").claim_for == timedelta(minutes=25)
    for wrong, said in (("PT61M", "'PT61M' is not a duration from PT1M to PT60M"),
                        ("P1D", "'P1D' is not a duration from PT1M to PT60M"),
                        ("10 minutes", "'10 MINUTES' is not a duration like PT1H"), (10, "10 is not a duration like")):
        with pytest.raises(PolicyError) as refused:
            with_claim_for(wrong)
        [problem] = [p for p in refused.value.problems if p.startswith("aftercare.claim_for: ")]
        assert said in problem and len(refused.value.problems) == 1, refused.value.problems
