"""The standard answer an aftercare agent used on a call (`standard_answer` on
`POST /v1/visits/{id}/attempts`): a text id of at most 100 characters (400 naming the field
otherwise), kept with the attempt, carried by visit_attempted and visit_completed, and the last
one used shown on the visit."""
from datetime import timedelta

from services.aftercare import events
from services.aftercare.schemas import AttemptIn
from shared.messaging.envelope import parse_event
from shared.web.requests import load
from tests.unit.test_aftercare_visits import ANSWERS, BRANCH, DUE, attempt, return_visit


def test_the_standard_answer_used_is_checked_kept_with_the_attempt_carried_by_its_events_and_shown():
    for wrong in ("x" * 101, "", "安全 首次", "a/b", 7):
        _, errors = load(AttemptIn(), {"outcome": "not_reached", "standard_answer": wrong})
        assert list(errors) == ["standard_answer"], wrong
    data, errors = load(AttemptIn(), {"outcome": "call_back", "call_back_at": (DUE + timedelta(days=1)).isoformat(),
                                      "standard_answer": "visit-follow-up-call-back-zh"})
    assert errors == {} and data["standard_answer"] == "visit-follow-up-call-back-zh"

    visit = return_visit()
    attempt(visit, DUE, outcome="call_back", call_back_at=DUE + timedelta(days=1),
            standard_answer="visit-follow-up-call-back-zh")
    assert visit.view(DUE, BRANCH)["standard_answer"] == "visit-follow-up-call-back-zh"
    attempt(visit, DUE + timedelta(days=1), outcome="reached", answers=ANSWERS, standard_answer="hair-colour-care-en")
    published = [parse_event(events.envelope(visit, event, sequence, None)) for sequence, event in visit.pull_events()]
    assert [(e["type"], e["payload"]["standard_answer"]) for e in published] == [
        ("visit_attempted", "visit-follow-up-call-back-zh"), ("visit_attempted", "hair-colour-care-en"),
        ("visit_completed", "hair-colour-care-en")]
    shown = visit.view(DUE + timedelta(days=1), BRANCH, detail=True)
    assert shown["standard_answer"] == "hair-colour-care-en"
    assert [a["standard_answer"] for a in shown["attempts"]] == ["visit-follow-up-call-back-zh", "hair-colour-care-en"]
    assert return_visit().view(DUE, BRANCH)["standard_answer"] is None
