"""Aftercare end to end over the real bus (issue 10): intake, investigation and aftercare in the
test process on one clock the tests move, with their relays and senders. A sale posted to intake
plans its visits; agents work them over HTTP; the calls not answered end in a message from
intake, then in abandonment; an allergy opens an urgent case; a resolved case's follow-up scored
2 reopens it."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.investigation.handlers import ADVERSE_REACTION_CASES
from shared.testing.fixtures import database_rows, handled, jsonbody, purge_queues_of, wait_until
from tests.e2e.test_investigation_cases import Chain, bearer, publish_raw
from tests.e2e.test_investigation_closure import done, resolve, to_remedy

pytestmark = pytest.mark.e2e
AGENT = ("aftercare_agent", "SH001")
ANSWERS = {"met_expectations": True, "discomfort": False, "packaging_ok": None, "satisfaction": 5,
           "suggestions": None}


@pytest.fixture
def chain(http, token, clock, start_service, start_relay, start_sender, database_factory, bus_listener, amqp_uri):
    """Intake, investigation and aftercare with their relays and senders, 10:00 in Shanghai on 2026-11-22."""
    from services.intake.service import IntakeService

    for name in ("investigation", "aftercare"):  # what earlier tests' services left unconsumed is not ours
        purge_queues_of(amqp_uri, name)
    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))
    cases_bus = bus_listener("investigation.events")
    visits_bus = bus_listener("aftercare.events")
    sales_bus = bus_listener("intake.events", "sale_recorded")
    databases = {name: database_factory(name) for name in ("intake", "investigation", "aftercare")}
    services = {name: start_service(name, clock=clock, database_url=url) for name, url in databases.items()}
    for url in databases.values():
        start_relay(url)
    staff = start_sender(databases["investigation"], service="investigation")
    customers = start_sender(databases["intake"], service="intake", on_outcome=IntakeService.message_outcome)
    chain = Chain(http, token, services["intake"], services["investigation"], staff, customers, cases_bus, clock)
    chain.aftercare, chain.visits_bus, chain.sales_bus, chain.databases = (services["aftercare"], visits_bus,
                                                                           sales_bus, databases)
    return chain


SALE = {"customer": {"name": "赵女士", "phone": "13700002222", "contact_consent": True, "language": "zh"},
        "sold_at": "2026-11-21T21:30:00+08:00",  # two days later is 21:30, past contact hours
        "items": [{"type": "service", "code": "HAIR-DYE", "name": "染发", "product_type": "hair_colour",
                   "technician_id": "T-017", "batch": "B2026-11-03"}]}


def post_sale(chain, sale=SALE) -> str:
    answer = chain.http.post(chain.intake.url("/v1/sales"), json=sale,
                             headers=bearer(chain.token("front_desk", branch="SH001")), timeout=10)
    assert answer.status_code == 201, answer.text
    return jsonbody(answer)["id"]


def visit_events(chain, correlation_id, event_type, count=1) -> list[dict]:
    return [m["body"] for m in chain.visits_bus.wait_for(
        lambda m: m["body"]["correlation_id"] == correlation_id and m["body"]["type"] == event_type, 15, count)]


def scheduled_visit(chain, sale_id) -> dict:
    [event] = visit_events(chain, sale_id, "visit_scheduled")
    return event["payload"]


def queue(chain, role=AGENT, **query) -> tuple[int, dict]:
    answer = chain.http.get(chain.aftercare.url("/v1/visits"), params=query,
                            headers=bearer(chain.token(role[0], branch=role[1])), timeout=10)
    return answer.status_code, jsonbody(answer)


def visit(chain, visit_id, role=AGENT, purpose: str | None = None) -> tuple[int, dict]:
    """The visit; with `purpose`, its contact read from intake too (contact=true: logged there)."""
    params = {"contact": "true", "purpose": purpose} if purpose else None
    answer = chain.http.get(chain.aftercare.url(f"/v1/visits/{visit_id}"), params=params,
                            headers=bearer(chain.token(role[0], branch=role[1])), timeout=10)
    return answer.status_code, jsonbody(answer)


def attempt(chain, visit_id, body, role=AGENT):
    return chain.http.post(chain.aftercare.url(f"/v1/visits/{visit_id}/attempts"), json=body,
                           headers=bearer(chain.token(role[0], branch=role[1])), timeout=10)


def test_a_hair_colour_sale_is_an_allergy_check_due_two_days_later_at_the_next_contact_hour(chain):
    sale_id = post_sale(chain)
    planned = scheduled_visit(chain, sale_id)
    due = datetime.fromisoformat("2026-11-24T09:00:00+08:00")  # 2 days after 21:30 is night: the next morning
    assert planned["kind"] == "return" and datetime.fromisoformat(planned["due_at"]) == due
    status, now_due = queue(chain)
    assert status == 200 and [v for v in now_due["items"] if v["sale_id"] == sale_id] == []  # not due yet
    status, later = queue(chain, due_before="2026-11-24T09:00:00+08:00")
    [listed] = [v for v in later["items"] if v["sale_id"] == sale_id]
    assert listed["allergy_check"] and listed["status"] == "scheduled" and listed["items"][0]["batch"] == "B2026-11-03"
    early = attempt(chain, listed["id"], {"outcome": "not_reached"})
    assert early.status_code == 409 and "not due" in jsonbody(early)["error"]["message"]

    chain.clock.set(due)
    wait_until(lambda: [v for v in queue(chain)[1]["items"] if v["id"] == listed["id"]], "the visit in the queue")
    status, detail = visit(chain, listed["id"])
    assert status == 200 and detail["follows"]["type"] == "sale" and detail["follows"]["id"] == sale_id
    assert detail["contact"] is None and detail["contact_unavailable"] is None  # not asked: intake not asked
    status, detail = visit(chain, listed["id"], purpose="过敏回访")
    assert detail["contact"]["phone"] == "13700002222" and detail["contact_unavailable"] is None  # from intake
    assert visit(chain, listed["id"], role=("aftercare_agent", "SH002"))[0] == 404
    assert queue(chain, role=("aftercare_agent", "SH002"))[1]["items"] == []

DUE = datetime.fromisoformat("2026-11-24T09:00:00+08:00")


def test_three_calls_unanswered_then_a_message_through_intake_then_the_visit_is_abandoned(chain):
    sale_id = post_sale(chain)
    visit_id = scheduled_visit(chain, sale_id)["visit_id"]
    chain.clock.set(DUE + timedelta(hours=1))
    first = done(attempt(chain, visit_id, {"outcome": "not_reached", "note": "无人接听"}))
    assert first["status"] == "in_progress" and first["message"] is None
    assert datetime.fromisoformat(first["call_at"]) == DUE + timedelta(days=1, hours=1)  # a day apart
    too_soon = attempt(chain, visit_id, {"outcome": "not_reached"})
    assert too_soon.status_code == 409 and "next call" in jsonbody(too_soon)["error"]["message"]
    assert [v for v in queue(chain)[1]["items"] if v["id"] == visit_id] == []  # back in the queue tomorrow
    for day in (1, 2):
        chain.clock.set(DUE + timedelta(days=day, hours=1))
        done(attempt(chain, visit_id, {"outcome": "not_reached"}))
    attempted = visit_events(chain, sale_id, "visit_attempted", count=3)
    assert [(e["payload"]["attempt"], e["payload"]["reached"]) for e in attempted] == [(1, False), (2, False),
                                                                                         (3, False)]
    [request] = visit_events(chain, sale_id, "customer_message_requested")
    assert (request["payload"]["record_type"], request["payload"]["record_id"]) == ("sale", sale_id)
    assert request["payload"]["channels"] == ["sms", "wechat"] and "赵" not in request["payload"]["text"]
    # Intake, the contact holder, sends it to the sale's customer; aftercare keeps the outcome.
    [sent] = wait_until(lambda: [m for m in chain.customers.notifier.sent if m["subject_id"] == sale_id],
                        "intake to send the message")
    assert sent["recipient"] == "13700002222" and sent["body"] == request["payload"]["text"]
    wait_until(lambda: (visit(chain, visit_id)[1]["message"] or {}).get("outcome") == "sent",
               "the message's outcome on the visit")

    chain.clock.set(DUE + timedelta(days=7))  # no answer 7 days after due
    [abandoned] = visit_events(chain, sale_id, "visit_abandoned")
    assert abandoned["payload"]["attempts"] == 3 and abandoned["payload"]["reason"] == "no answer"
    status, detail = visit(chain, visit_id, purpose="回访")
    assert detail["status"] == "abandoned" and detail["contact"] is None  # a finished visit's contact is not read
    late = attempt(chain, visit_id, {"outcome": "reached", "answers": ANSWERS})
    assert late.status_code == 409 and "abandoned" in jsonbody(late)["error"]["message"]


def test_a_customer_reached_on_the_second_day_and_one_who_asks_to_be_called_back(chain):
    sale_id = post_sale(chain)
    visit_id = scheduled_visit(chain, sale_id)["visit_id"]
    chain.clock.set(DUE)
    asked = done(attempt(chain, visit_id, {"outcome": "call_back", "call_back_at": "2026-11-25T22:00:00+08:00"}))
    assert datetime.fromisoformat(asked["call_at"]) == datetime.fromisoformat("2026-11-26T09:00:00+08:00")  # not at night
    too_late = attempt(chain, visit_id, {"outcome": "call_back", "call_back_at": "2026-12-05T10:00:00+08:00"})
    assert too_late.status_code == 422 and "call_back_at" in jsonbody(too_late)["error"]["fields"]
    chain.clock.set(datetime.fromisoformat("2026-11-26T09:05:00+08:00"))
    reached = done(attempt(chain, visit_id, {"outcome": "reached", "channel": "phone", "answers": {
        **ANSWERS, "satisfaction": 4, "packaging_ok": True, "suggestions": "希望染发前多提醒护理注意事项"}}))
    assert reached["status"] == "completed" and reached["outcome"]["score"] == 4
    [completed] = visit_events(chain, sale_id, "visit_completed")
    assert completed["payload"]["score"] == 4
    assert completed["payload"]["answers"]["suggestions"] == "希望染发前多提醒护理注意事项"  # for HQ's reports
    assert [m["body"]["type"] for m in chain.visits_bus.messages if m["body"]["correlation_id"] == sale_id
            and m["body"]["type"] in ("customer_message_requested", "adverse_reaction_reported")] == []


def test_an_allergy_answer_opens_an_urgent_case_linked_to_the_sale_technician_and_batch(chain):
    sale_id = post_sale(chain)
    visit_id = scheduled_visit(chain, sale_id)["visit_id"]
    chain.clock.set(DUE + timedelta(hours=2))
    undescribed = attempt(chain, visit_id, {"outcome": "reached", "answers": {**ANSWERS, "discomfort": True}})
    assert undescribed.status_code == 422
    assert list(jsonbody(undescribed)["error"]["fields"]) == ["answers.discomfort_description"]
    reached = done(attempt(chain, visit_id, {"outcome": "reached", "answers": {
        **ANSWERS, "discomfort": True, "discomfort_description": "染发后头皮红肿发痒", "satisfaction": 2}}))
    assert reached["outcome"]["adverse_reaction"] is True
    [report] = visit_events(chain, sale_id, "adverse_reaction_reported")
    assert report["payload"]["technician_id"] == "T-017" and report["payload"]["product"]["batch"] == "B2026-11-03"
    case_id = str(uuid.uuid5(ADVERSE_REACTION_CASES, visit_id))
    case = chain.wait_for_case(case_id)
    assert case["priority"] == "urgent" and case["origin"]["sale_id"] == sale_id
    assert case["origin"]["technician_id"] == "T-017"
    [opened] = chain.events(case_id, "case_opened")
    assert opened["payload"]["priority"] == "urgent"


def test_a_resolved_case_is_followed_up_three_days_later_and_a_score_of_2_reopens_it(chain):
    case_id = to_remedy(chain)
    resolved = resolve(chain, case_id)
    assert resolved["state"] == "resolved"
    [planned] = visit_events(chain, case_id, "visit_scheduled")
    resolved_at = datetime.fromisoformat(chain.events(case_id, "case_resolved")[0]["payload"]["resolved_at"])
    assert planned["payload"]["kind"] == "follow_up"
    assert datetime.fromisoformat(planned["payload"]["due_at"]) == resolved_at + timedelta(days=3)  # 10:00: in hours
    visit_id = planned["payload"]["visit_id"]
    status, detail = visit(chain, visit_id)
    assert detail["follows"]["type"] == "case" and detail["follows"]["reference"] == resolved["reference"]

    chain.clock.advance(days=3)
    assert attempt(chain, visit_id, {"outcome": "reached", "answers": {**ANSWERS, "satisfaction": 2}}).status_code == 422
    reached = done(attempt(chain, visit_id, {"outcome": "reached", "answers": {
        **ANSWERS, "satisfaction": 2, "resolved": False, "suggestions": "颜色还是不均匀"}}))
    assert reached["outcome"]["dissatisfaction"] is True
    [report] = visit_events(chain, case_id, "dissatisfaction_reported")
    assert (report["payload"]["score"], report["payload"]["resolved"]) == (2, False)
    [reopened] = chain.events(case_id, "case_reopened")
    case = jsonbody(chain.case(case_id))
    assert case["state"] != "resolved" and case["escalation_level"] >= 1
    assert [t["name"] for t in case["open_tasks"]] == ["propose_remedy"]


def test_a_reopened_case_s_pending_follow_up_is_cancelled(chain, amqp_uri):
    case_id = to_remedy(chain)
    resolve(chain, case_id)
    visit_id = visit_events(chain, case_id, "visit_scheduled")[0]["payload"]["visit_id"]
    # Investigation reopens it before the follow-up is due (the customer complained again).
    reopened = {**chain.events(case_id, "case_resolved")[0], "event_id": str(uuid.uuid4()), "type": "case_reopened"}
    reopened["payload"] = {"case_id": case_id, "complaint_id": case_id, "reopened": 1, "escalation_level": 1}
    publish_raw(amqp_uri, reopened)
    [cancelled] = visit_events(chain, case_id, "visit_cancelled")
    assert cancelled["payload"]["visit_id"] == visit_id and cancelled["payload"]["reason"] == "case_reopened"
    chain.clock.advance(days=3)
    assert attempt(chain, visit_id, {"outcome": "not_reached"}).status_code == 409


def test_no_consent_no_visit_and_a_duplicated_sale_makes_one_visit(chain, amqp_uri):
    refused_id = post_sale(chain, {**SALE, "customer": {**SALE["customer"], "contact_consent": False}})
    [refused] = [m["body"] for m in chain.sales_bus.wait_for(lambda m: m["body"]["correlation_id"] == refused_id)]
    wait_until(lambda: handled(chain.databases["aftercare"], refused["event_id"]), "aftercare to take the sale")
    assert database_rows(chain.databases["aftercare"], sa.text("SELECT id FROM visits WHERE sale_id = :s")
                         .bindparams(s=refused_id)) == []

    sale_id = post_sale(chain)
    [recorded] = [m["body"] for m in chain.sales_bus.wait_for(lambda m: m["body"]["correlation_id"] == sale_id)]
    scheduled_visit(chain, sale_id)
    publish_raw(amqp_uri, recorded)  # delivered again, same event id
    copy = {**recorded, "event_id": str(uuid.uuid4())}
    publish_raw(amqp_uri, copy)  # replayed under a new id
    wait_until(lambda: handled(chain.databases["aftercare"], copy["event_id"]), "aftercare to take the copy")
    assert len(database_rows(chain.databases["aftercare"], sa.text("SELECT id FROM visits WHERE sale_id = :s")
                             .bindparams(s=sale_id))) == 1
    assert len([m for m in chain.visits_bus.messages if m["body"]["correlation_id"] == sale_id
                and m["body"]["type"] == "visit_scheduled"]) == 1


def test_the_api_answers_in_its_error_order_and_names_every_wrong_field(chain):
    sale_id = post_sale(chain)
    visit_id = scheduled_visit(chain, sale_id)["visit_id"]
    chain.clock.set(DUE)
    assert attempt(chain, str(uuid.uuid4()), {"outcome": "not_reached"}).status_code == 404
    assert attempt(chain, "not-a-visit", {"outcome": "not_reached"}).status_code == 404
    assert attempt(chain, visit_id, {"outcome": "not_reached"}, role=("store_manager", "SH002")).status_code == 404
    assert attempt(chain, visit_id, {"outcome": "not_reached"}, role=("front_desk", "SH001")).status_code == 403
    bad = attempt(chain, visit_id, {"outcome": "reached", "answers": {"satisfaction": 9, "met_expectations": "yes",
                                                                      "colour": "red"}, "extra": 1})
    assert bad.status_code == 400
    assert set(jsonbody(bad)["error"]["fields"]) == {"answers.satisfaction", "answers.met_expectations",
                                                      "answers.discomfort", "answers.colour", "extra"}
    assert attempt(chain, visit_id, {"outcome": "call_back"}).status_code == 400  # when?
    status, listed = queue(chain, due_before="tomorrow", status="lost", limit=0)
    assert status == 400 and set(listed["error"]["fields"]) == {"due_before", "status", "limit"}
    assert queue(chain, cursor="nonsense")[0] == 400
    assert queue(chain, role=("front_desk", "SH001"))[0] == 403
    status, hq = queue(chain, role=("hq_admin", "*"))
    assert status == 200 and visit_id in [v["id"] for v in hq["items"]]
    status, detail = visit(chain, visit_id, role=("hq_analyst", "*"), purpose="回访")
    assert status == 200 and detail["contact"] is None and "does not call" in detail["contact_unavailable"]
    done(attempt(chain, visit_id, {"outcome": "reached", "answers": ANSWERS}))
    assert attempt(chain, visit_id, {"outcome": "not_reached"}).status_code == 409  # finished
