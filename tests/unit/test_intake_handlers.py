"""Intake's use cases on in-memory repositories: what is stored, published and sent, with no
PostgreSQL (the same handlers run on the real database in tests/e2e)."""
import uuid
from datetime import datetime, timezone

import pytest

from services.intake import handlers
from services.intake.domain import Complaint
from shared.calendar.policy import load_policy
from shared.messaging.envelope import build_event, parse_event
from shared.messaging.inbox import AlreadyHandled
from shared.persistence.unit_of_work import UnpublishedEvents
from shared.security.auth import Identity
from shared.testing.samples import complaint_request
from shared.web.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tests.unit.intake_fakes import FakeIntakeStore

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
KEY = b"k" * 32
POLICY = load_policy()
FRONT_DESK = Identity(subject="fd-1", role="front_desk", branches=frozenset({"SH001"}), scope={"branch": "SH001"})


def register(store, body=None, key=None, who=FRONT_DESK):
    return handlers.register_complaint(store, identity=who, body=body or complaint_request(), policy=POLICY,
                                       rules=POLICY.section("intake"), now=NOW, ref_key=KEY, idempotency_key=key,
                                       causation_id="req-1")


def case_event(event_type: str, complaint_id: str | None, sequence: int, **extra) -> dict:
    payload = {"case_id": complaint_id or str(uuid.uuid4()), "complaint_id": complaint_id, **extra}
    return parse_event(build_event(event_type, payload, branch_code="SH001", correlation_id=payload["case_id"],
                                   occurred_at=NOW, sequence=sequence))


def test_a_complaint_is_stored_published_as_event_one_and_acknowledged_in_one_commit():
    store = FakeIntakeStore()
    status, answer = register(store)
    assert status == 201 and store.commits == 1
    [event] = store.published
    assert (event["type"], event["sequence"], event["correlation_id"], event["causation_id"]) == \
        ("complaint_registered", 1, answer["id"], "req-1")
    assert event["payload"]["reference"] == answer["reference"] == "SH001-20261122-0001"
    assert event["payload"]["customer_ref"].startswith("c_")
    assert "13812346138" not in str(event)  # the contact stays in intake
    [ack] = store.notified
    assert ack.recipient == "13812346138" and ack.subject_id == answer["id"] and "王女士" in ack.body
    assert store.complaint(answer["id"]).sequence == 1


def test_a_retry_with_the_same_key_gets_the_first_answer_and_publishes_nothing_more():
    store = FakeIntakeStore()
    first = register(store, key="till-7-1")
    assert register(store, key="till-7-1") == first
    assert len(store.published) == 1 and len(store.notified) == 1
    with pytest.raises(Conflict):
        register(store, body=complaint_request(description="另一件事"), key="till-7-1")


def test_every_wrong_field_is_named_and_nothing_is_stored_or_published():
    store = FakeIntakeStore()
    body = complaint_request(kind="rant", category="weather", severity_flags=["sunburn"],
                             occurred_at="2099-01-01T00:00:00+08:00")
    with pytest.raises(ValidationFailed) as refused:
        register(store, body=body)
    assert {"kind", "severity_flags", "occurred_at"} <= set(refused.value.fields)
    assert store.commits == 0 and store.published == [] and store.notified == []


def test_the_status_follows_the_newest_case_event_whatever_order_they_arrive_in():
    store = FakeIntakeStore()
    _, answer = register(store)
    cid = answer["id"]
    arrivals = [case_event("case_opened", cid, 1), case_event("case_closed", cid, 5, outcome="satisfied"),
                case_event("case_resolved", cid, 4), case_event("case_assigned", cid, 2, owner="sm-1")]
    changed = [handlers.follow_case(store.for_event("intake.follow_case", e["event_id"]), event=e)
               for e in arrivals]
    assert changed == [True, True, False, False]
    assert handlers.get_complaint(store, identity=FRONT_DESK, complaint_id=cid)["status"] == "closed"
    # Following a case publishes nothing: the complaint's own events are intake's registrations.
    assert [e["type"] for e in store.published] == ["complaint_registered"]


def test_the_complaint_knows_when_its_case_closed_and_whether_it_is_held():
    store = FakeIntakeStore()
    _, answer = register(store)
    cid = answer["id"]
    for event in (case_event("case_closed", cid, 5, outcome="satisfied"),
                  case_event("legal_hold_released", cid, 7, actor="hq-1", actor_role="hq_admin"),
                  case_event("legal_hold_set", cid, 6, actor="hq-1", actor_role="hq_admin", reason="诉讼")):
        handler = handlers.follow_legal_hold if event["type"].startswith("legal_hold") else handlers.follow_case
        handler(store.for_event(f"intake.{handler.__name__}", event["event_id"]), event=event)
    complaint = store.complaint(cid)
    assert (complaint.status, complaint.closed_at) == ("closed", NOW)
    assert complaint.legal_hold is None  # the release is newer than the hold that arrived after it
    held = case_event("legal_hold_set", cid, 8, actor="hq-1", actor_role="hq_admin", reason="诉讼")
    held["branch_code"] = "BJ001"  # not the complaint's branch: a producer's mistake
    assert handlers.follow_legal_hold(store.for_event("h", held["event_id"]), event=held) is False
    held = case_event("legal_hold_set", cid, 8, actor="hq-1", actor_role="hq_admin", reason="诉讼")
    assert handlers.follow_legal_hold(store.for_event("h", held["event_id"]), event=held)
    assert store.complaint(cid).legal_hold == {"reason": "诉讼", "by": "hq-1", "at": "2026-11-22T02:00:00Z"}


def test_a_redelivered_case_event_has_no_second_effect():
    store = FakeIntakeStore()
    _, answer = register(store)
    event = case_event("case_reopened", answer["id"], 3, escalation_level=1)
    assert handlers.follow_case(store.for_event("intake.follow_case", event["event_id"]), event=event)
    with pytest.raises(AlreadyHandled):
        handlers.follow_case(store.for_event("intake.follow_case", event["event_id"]), event=event)


def test_a_case_without_a_complaint_here_changes_nothing():
    store = FakeIntakeStore()
    for event in (case_event("case_opened", None, 1), case_event("case_opened", str(uuid.uuid4()), 1)):
        assert handlers.follow_case(store.for_event("intake.follow_case", event["event_id"]), event=event) is False


def test_a_record_whose_events_were_not_queued_cannot_commit():
    store = FakeIntakeStore()
    complaint = Complaint.register(complaint_request(occurred_at=None), branch=POLICY.branch("SH001"),
                                   rules=POLICY.section("intake"), received_at=NOW, number=1, recorded_by="fd-1",
                                   recorded_by_role="front_desk", ref_key=KEY)
    with pytest.raises(UnpublishedEvents):
        with store.unit_of_work() as uow:
            uow.complaints.add(complaint)  # ... and forgets events.envelopes(complaint)
    assert store.commits == 0


def test_reading_a_contact_is_scoped_needs_a_purpose_and_is_logged():
    store = FakeIntakeStore()
    _, answer = register(store)
    contact = handlers.read_contact(store, identity=FRONT_DESK, record_id=answer["id"], purpose="call back", now=NOW)
    assert contact["phone"] == "13812346138"
    [entry] = store.tables["contact_access_log"]["entries"]
    assert (entry["subject"], entry["purpose"], entry["record_id"], entry["outcome"]) == (
        "fd-1", "call back", answer["id"], "granted")


ANALYST = Identity(subject="an-1", role="hq_analyst", branches=None, scope={"all": True})
OTHER_BRANCH = Identity(subject="fd-2", role="front_desk", branches=frozenset({"BJ001"}), scope={"branch": "BJ001"})


def test_every_refused_contact_read_is_logged_with_who_what_and_why():
    store = FakeIntakeStore()
    _, answer = register(store)
    unknown = str(uuid.uuid4())
    for who, record_id, purpose, error in [(OTHER_BRANCH, answer["id"], "call back", NotFound),
                                           (FRONT_DESK, unknown, "call back", NotFound),
                                           (FRONT_DESK, "not-an-id", "call back", NotFound),
                                           (ANALYST, answer["id"], "call back", Forbidden),
                                           (FRONT_DESK, answer["id"], "\u200b", ValidationFailed)]:
        with pytest.raises(error):
            handlers.read_contact(store, identity=who, record_id=record_id, purpose=purpose, now=NOW)
    log = [(e["subject"], e["record_id"], e["branch_code"], e["outcome"], e["reason"])
           for e in store.tables["contact_access_log"]["entries"]]
    assert log == [("fd-2", answer["id"], "SH001", "refused", "out_of_scope"),
                   ("fd-1", unknown, None, "refused", "unknown_record"),
                   ("fd-1", "not-an-id", None, "refused", "unknown_record"),
                   ("an-1", answer["id"], "SH001", "refused", "role"),
                   ("fd-1", answer["id"], "SH001", "refused", "purpose")]


@pytest.mark.parametrize("purpose", [None, "", " ", "\u200b", "\u200b\u200b\u200b", "a", " a\u200b ", "1234",
                                     "\u2060\ufeffx\u00ad", "x" * 501, "call\x00back", {"why": "x"},
                                     "\u202ekcab llac"])
def test_a_purpose_needs_visible_words(purpose):
    store = FakeIntakeStore()
    _, answer = register(store)
    with pytest.raises(ValidationFailed) as refused:
        handlers.read_contact(store, identity=FRONT_DESK, record_id=answer["id"], purpose=purpose, now=NOW)
    assert "at least 2 letters" in refused.value.fields["purpose"][0]
    [entry] = store.tables["contact_access_log"]["entries"]
    assert (entry["outcome"], entry["reason"]) == ("refused", "purpose") and "\x00" not in entry["purpose"]


@pytest.mark.parametrize("purpose", ["回访", "call back", "ab"])
def test_short_purposes_with_two_letters_are_accepted(purpose):
    store = FakeIntakeStore()
    _, answer = register(store)
    assert handlers.read_contact(store, identity=FRONT_DESK, record_id=answer["id"], purpose=purpose, now=NOW)


def test_the_purpose_is_logged_as_cleaned():
    store = FakeIntakeStore()
    _, answer = register(store)
    handlers.read_contact(store, identity=FRONT_DESK, record_id=answer["id"], purpose=" 回\u200b访 ", now=NOW)
    [entry] = store.tables["contact_access_log"]["entries"]
    assert (entry["outcome"], entry["purpose"]) == ("granted", "回访")


@pytest.mark.parametrize("occurred_at, refused", [
    ("1999-12-31T23:30:00-01:00", False),  # 00:30 UTC on 2000-01-01: an instant in 2000
    ("2000-01-01T07:59:00+08:00", True),   # 23:59 UTC on 1999-12-31, although its local year is 2000
    ("1999-12-31T23:59:59+00:00", True),
])
def test_before_2000_is_judged_on_the_instant(occurred_at, refused):
    store = FakeIntakeStore()
    if refused:
        with pytest.raises(ValidationFailed) as raised:
            register(store, body=complaint_request(occurred_at=occurred_at))
        assert raised.value.fields["occurred_at"] == ["must not be before 2000-01-01"]
    else:
        assert register(store, body=complaint_request(occurred_at=occurred_at))[0] == 201


def test_a_refusal_answers_even_when_its_log_cannot_be_written(caplog):
    store = FakeIntakeStore()
    _, answer = register(store)
    broken = store.unit_of_work_class

    class LogFails(broken):
        def _open(self):
            super()._open()
            self.contact_access.add = lambda **entry: (_ for _ in ()).throw(RuntimeError("disk full"))

    store.unit_of_work_class = LogFails
    with pytest.raises(NotFound):
        handlers.read_contact(store, identity=OTHER_BRANCH, record_id=answer["id"], purpose="call back", now=NOW)
    assert "contact read refused but not logged" in caplog.text


def message_request(record_type, record_id, channels=("sms",), text="王女士您好，处理结果如下"):
    payload = {"record_type": record_type, "record_id": record_id, "purpose": "written_result", "text": text,
               "language": "zh", "channels": list(channels)}
    return parse_event(build_event("customer_message_requested", payload, branch_code="SH001",
                                   correlation_id=record_id, occurred_at=NOW, sequence=3, source="investigation"))


def test_a_requested_message_is_queued_for_the_customer_with_a_masked_log_text():
    store = FakeIntakeStore()
    _, answer = register(store)
    asked = message_request("complaint", answer["id"], channels=("email", "wechat"))
    handlers.send_customer_message(store.for_event("intake.send_customer_message", asked["event_id"]),
                                   event=asked, now=NOW)
    message = store.notified[-1]
    assert (message.channel, message.recipient, message.request_event_id) == ("wechat", "13812346138",
                                                                              asked["event_id"])
    assert message.log_text == "王**您好，处理结果如下"
    assert [e["type"] for e in store.published] == ["complaint_registered"]  # the outcome comes after sending


def test_a_request_without_a_way_to_reach_the_customer_is_answered_at_once():
    store = FakeIntakeStore()
    _, answer = register(store)  # the customer left a phone, no email
    asked = message_request("complaint", answer["id"], channels=("email",))
    handlers.send_customer_message(store.for_event("h", asked["event_id"]), event=asked, now=NOW)
    [failed] = store.events("customer_message_failed")
    assert failed["payload"]["reason"] == "no_contact" and failed["sequence"] == 2
    assert failed["causation_id"] == asked["event_id"] and len(store.notified) == 1  # the acknowledgement only
    assert store.complaint(answer["id"]).sequence == 2


def test_a_request_about_a_record_intake_does_not_hold_is_answered_unknown():
    store = FakeIntakeStore()
    asked = message_request("sale", str(uuid.uuid4()))
    handlers.send_customer_message(store.for_event("h", asked["event_id"]), event=asked, now=NOW)
    [failed] = store.events("customer_message_failed")
    assert (failed["payload"]["reason"], failed["correlation_id"]) == ("unknown_record", asked["correlation_id"])


def test_events_naming_another_branch_than_the_record_change_nothing_and_send_nothing():
    store = FakeIntakeStore()
    _, answer = register(store)  # an SH001 complaint
    wrong_branch = case_event("case_opened", answer["id"], 1)
    wrong_branch["branch_code"] = "BJ001"
    assert handlers.follow_case(store.for_event("h", wrong_branch["event_id"]), event=wrong_branch) is False
    asked = message_request("complaint", answer["id"])
    asked["branch_code"] = "BJ001"
    handlers.send_customer_message(store.for_event("h", asked["event_id"]), event=asked, now=NOW)
    [failed] = store.events("customer_message_failed")
    assert failed["payload"]["reason"] == "unknown_record" and len(store.notified) == 1  # the acknowledgement


def test_a_failed_delivery_is_published_without_the_gateways_words():
    complaint = Complaint.register(complaint_request(occurred_at=None), branch=POLICY.branch("SH001"),
                                   rules=POLICY.section("intake"), received_at=NOW, number=1, recorded_by="fd-1",
                                   recorded_by_role="front_desk", ref_key=KEY)
    complaint.pull_events()
    complaint.message_outcome(str(uuid.uuid4()), "sms", False, "rejected +86 138 1234 6138: 王女士您好", at=NOW)
    [(sequence, failed)] = complaint.pull_events()
    assert failed.reason == "delivery_failed" and "138" not in failed.detail and "王" not in failed.detail


# -- a customer looked up by phone ------------------------------------------------------------------

def look_up(store, phone="13812346138", purpose="顾客询问投诉进度", who=FRONT_DESK, **more):
    return handlers.look_up_customer(store, identity=who, read_body=lambda: {"phone": phone, "purpose": purpose,
                                                                              **more},
                                     ref_key=KEY, now=NOW)


def sell(store, phone="13812346138", who=FRONT_DESK, sold_at="2026-11-21T15:00:00+08:00"):
    body = {"customer": {"name": "王女士", "phone": phone, "contact_consent": True}, "sold_at": sold_at,
            "items": [{"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour"}]}
    return handlers.record_sale(store, identity=who, body=body, policy=POLICY, rules=POLICY.section("intake"),
                                now=NOW, ref_key=KEY)[1]


def test_a_look_up_by_phone_finds_the_customer_s_records_in_scope_however_the_phone_is_typed_and_is_logged():
    store = FakeIntakeStore()
    first = register(store)[1]
    second = register(store, body=complaint_request(description="又过敏了"))[1]
    register(store, body=complaint_request(customer={"name": "李先生", "phone": "13900001111"}))
    register(store, body=complaint_request(branch_code="BJ001"), who=Identity(
        subject="fd-9", role="front_desk", branches=frozenset({"BJ001"}), scope={"branch": "BJ001"}))
    sale = sell(store)
    answers = [look_up(store, phone) for phone in ("13812346138", "+86 138-1234-6138", "(138) 1234 6138",
                                                   "86 13812346138")]
    assert all(a == answers[0] for a in answers)
    answer = answers[0]
    assert answer["customer_ref"].startswith("c_") and answer["customer"] == {"phone": "138****6138"}
    # newest first (the same second: by id, as the list does), only SH001's; no contact, no text
    assert {c["id"] for c in answer["complaints"]} == {first["id"], second["id"]}
    assert answer["complaints"][0]["status"] == "received" and answer["complaints"][0]["branch_code"] == "SH001"
    assert set(answer["complaints"][0]) == {"id", "reference", "kind", "category", "priority", "status",
                                            "branch_code", "received_at", "first_response_due", "resolution_due",
                                            "closed_at"}
    assert [s["id"] for s in answer["sales"]] == [sale["id"]] and answer["sales"][0]["items"][0]["code"] == "HAIR-DYE"
    assert (answer["more_complaints"], answer["more_sales"]) == (False, False)
    assert "13812346138" not in str(answer) and "王女士" not in str(answer)
    log = store.tables["contact_access_log"]["entries"]
    assert len(log) == 4 and {(e["subject"], e["role"], e["record_type"], e["record_id"], e["purpose"],
                               e["outcome"], e["accessed_at"]) for e in log} == {
        ("fd-1", "front_desk", "customer", answer["customer_ref"], "顾客询问投诉进度", "granted", NOW)}
    # BJ001's front desk sees its own complaint only; HQ sees all three
    bj = look_up(store, who=Identity(subject="fd-9", role="front_desk", branches=frozenset({"BJ001"}),
                                     scope={"branch": "BJ001"}))
    assert [c["branch_code"] for c in bj["complaints"]] == ["BJ001"] and bj["sales"] == []
    hq = look_up(store, who=Identity(subject="hq-1", role="hq_admin", branches=None, scope={"all": True}))
    assert len(hq["complaints"]) == 3


def test_an_unknown_phone_answers_empty_lists_and_is_logged_all_the_same():
    store = FakeIntakeStore()
    register(store, body=complaint_request(branch_code="BJ001"), who=Identity(
        subject="fd-9", role="front_desk", branches=frozenset({"BJ001"}), scope={"branch": "BJ001"}))
    unknown, elsewhere = look_up(store, "13700000000"), look_up(store)  # the second only in another branch
    for answer in (unknown, elsewhere):
        assert (answer["complaints"], answer["sales"], answer["more_complaints"]) == ([], [], False)
        assert answer["customer_ref"].startswith("c_")
    assert unknown["customer_ref"] != elsewhere["customer_ref"]
    assert len(store.tables["contact_access_log"]["entries"]) == 2


def test_a_look_up_names_every_wrong_field_and_logs_nothing():
    store = FakeIntakeStore()
    for body, wrong in [({}, {"phone", "purpose"}), ({"phone": "55555", "purpose": "x"}, {"phone", "purpose"}),
                        ({"phone": None, "purpose": "\u200b\u200b"}, {"phone", "purpose"}),
                        ({"phone": 13812346138, "purpose": "回访"}, {"phone"}),
                        ({"phone": "13812346138", "purpose": "查" * 501}, {"purpose"}),
                        ({"phone": "13812346138", "purpose": "\u202ekcab llac"}, {"purpose"}),
                        ({"phone": "13812346138", "purpose": "回访", "branch": "SH001"}, {"branch"})]:
        with pytest.raises(ValidationFailed) as refused:
            handlers.look_up_customer(store, identity=FRONT_DESK, read_body=lambda: body, ref_key=KEY, now=NOW)
        assert set(refused.value.fields) == wrong, (body, refused.value.fields)
        assert "55555" not in str(refused.value.fields)  # what was typed is not echoed
    assert "at least 2 letters" in refused.value.fields.get("purpose", ["at least 2 letters"])[0]
    assert store.tables.get("contact_access_log", {}).get("entries", []) == []


@pytest.mark.parametrize("role", ["hq_analyst", "auditor", "aftercare_agent", "branch_integration"])
def test_roles_that_neither_work_a_front_desk_nor_handle_cases_may_not_look_customers_up(role):
    store = FakeIntakeStore()
    read = []
    with pytest.raises(Forbidden):
        handlers.look_up_customer(store, identity=Identity(subject="x-1", role=role, branches=None,
                                                           scope={"all": True}),
                                  read_body=lambda: read.append(1) or {}, ref_key=KEY, now=NOW)
    assert read == []  # refused before the body is read: 403 comes before 400


def test_a_look_up_answers_at_most_50_of_each_and_says_there_are_more():
    store = FakeIntakeStore()
    for _ in range(51):
        register(store)
    answer = look_up(store)
    assert len(answer["complaints"]) == 50 and answer["more_complaints"] is True and answer["more_sales"] is False
