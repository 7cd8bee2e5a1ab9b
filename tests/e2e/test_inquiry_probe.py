"""Inquiries and their conversion probed from outside: intake and investigation (each with its
relay) and the console run once for the module on one clock, over the real bus. An inquiry's
answer (investigation) and its conversion (intake) that cross, in either order, end in an open
complaint on both sides (intake follows case_converted); the console's conversion form sends the
severity flags as it shows them and refuses a post without its CSRF token or for another
branch's inquiry; a converted inquiry keeps no timer of its own."""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone

import eventlet
import pytest
import requests
import sqlalchemy as sa

from shared.calendar.clock import ManualClock
from shared.messaging.relay import Relay
from shared.persistence import db
from shared.security import auth
from shared.testing.fixtures import (
    database_rows, free_port, jsonbody, purge_queues_of, run_service, stop_runners, wait_until,
)
from shared.testing.samples import complaint_request
from tests.e2e.test_console import Browser, csrf_of
from tests.e2e.test_console_customer_file import staff

pytestmark = pytest.mark.e2e
START = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
QUESTION = "请问染发后头皮有点痒正常吗？"


class Chain:
    def __init__(self, amqp_uri: str, urls: dict, databases: dict, clock: ManualClock):
        self.amqp_uri, self.urls, self.databases, self.clock = amqp_uri, urls, databases, clock
        self.http = requests.Session()
        self.relays: dict[str, Relay] = {}

    # -- the relays: stopped, an outbox keeps what a service publishes until started again ------

    def start_relay(self, name: str) -> None:
        relay = Relay(db.make_engine(self.databases[name], 2), self.amqp_uri)
        relay.thread = eventlet.spawn(relay.run)
        self.relays[name] = relay

    def stop_relay(self, name: str) -> None:
        relay = self.relays.pop(name)
        relay.stop()
        relay.thread.wait()
        relay.engine.dispose()

    # -- the APIs --------------------------------------------------------------------------------

    @staticmethod
    def headers(role: str, branch: str = "SH001") -> dict:
        return {"Authorization": f"Bearer {auth.issue_token(role=role, subject=f'{role}-p', branch=branch)}"}

    def api(self, method: str, service: str, path: str, role: str = "hq_admin", branch: str = "*", **kwargs):
        return self.http.request(method, self.urls[service] + path, headers={
            **self.headers(role, branch), **kwargs.pop("headers", {})}, timeout=10, **kwargs)

    def inquiry(self, **changes) -> str:
        answer = self.api("POST", "intake", "/v1/complaints", "front_desk", "SH001", json=complaint_request(**{
            "kind": "inquiry", "description": QUESTION, "severity_flags": None, "occurred_at": None, **changes}))
        assert answer.status_code == 201, answer.text
        complaint_id = jsonbody(answer)["id"]
        self.wait_for_case(complaint_id, lambda c: c["open_tasks"])
        return complaint_id

    def convert(self, complaint_id: str, body: dict | None = None, role: str = "front_desk", **kwargs):
        return self.api("POST", "intake", f"/v1/complaints/{complaint_id}/convert", role, "SH001",
                        json=body if body is not None else {}, **kwargs)

    def answer(self, case_id: str, role: str = "front_desk"):
        return self.api("POST", "investigation", f"/v1/cases/{case_id}/tasks/answer", role, "SH001",
                        json={"message": "正常，请勿抓挠", "channel": "phone"})

    def browser(self, login: str) -> Browser:
        browser = Browser(self.urls["console"])
        assert browser.sign_in(login).status_code == 303
        return browser

    def case(self, case_id: str) -> dict | None:
        answer = self.api("GET", "investigation", f"/v1/cases/{case_id}")
        return jsonbody(answer) if answer.status_code == 200 else None

    def complaint(self, complaint_id: str) -> dict:
        return jsonbody(self.api("GET", "intake", f"/v1/complaints/{complaint_id}"))

    def wait_for_case(self, case_id: str, check=lambda case: True) -> dict:
        def ready():
            case = self.case(case_id)
            return case is not None and check(case) and case
        return wait_until(ready, f"case {case_id}")


@pytest.fixture(scope="module")
def chain(amqp_uri, database_factory):
    """Intake, investigation, their relays and the console (reporting and aftercare away)."""
    for name in ("intake", "investigation"):
        purge_queues_of(amqp_uri, name)  # what other modules' services left for them
    clock = ManualClock(START)
    running, away = {}, f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name in ("intake", "investigation"):
        running[name] = run_service(name, amqp_uri, database_factory(name), clock)
    running["console"] = run_service("console", amqp_uri, database_factory("console"), clock,
                                     INTAKE_URL=running["intake"].base_url, AFTERCARE_URL=away, REPORTING_URL=away,
                                     INVESTIGATION_URL=running["investigation"].base_url)
    databases = {name: service.config["DATABASE_URL"] for name, service in running.items()}
    before = os.environ.get("CONSOLE_DATABASE_URL")
    os.environ["CONSOLE_DATABASE_URL"] = databases["console"]  # what `closeloop staff` works on
    try:
        staff("add", "fran", "--name", "前台小芳", "--role", "front_desk", "--branch", "SH001")
        staff("add", "bo", "--name", "北京前台", "--role", "front_desk", "--branch", "BJ001")
    finally:
        os.environ.pop("CONSOLE_DATABASE_URL") if before is None else os.environ.update(CONSOLE_DATABASE_URL=before)
    chain = Chain(amqp_uri, {name: service.base_url for name, service in running.items()}, databases, clock)
    for name in ("intake", "investigation"):
        chain.start_relay(name)
    yield chain
    chain.http.close()
    for name in list(chain.relays):
        chain.stop_relay(name)
    stop_runners([service.runner for service in running.values()])


def test_an_inquiry_answered_while_intake_converts_it_ends_an_open_complaint_on_both_sides(chain):
    """Investigation answers the inquiry (closing its case) before intake has heard it; intake
    converts it meanwhile. Investigation then converts the closed case in place: intake must not
    be left saying "closed" of a complaint whose case is open again."""
    case_id = chain.inquiry()
    wait_until(lambda: chain.complaint(case_id)["status"] == "received", "intake to hear the case opened")
    chain.stop_relay("investigation")  # what investigation does reaches intake only later
    try:
        assert chain.answer(case_id).status_code == 200
        converted = chain.convert(case_id, {"category": "safety", "note": "顾客说头皮红肿"})
        assert converted.status_code == 200, converted.text
    finally:
        chain.start_relay("investigation")
    case = chain.wait_for_case(case_id, lambda c: c["kind"] == "complaint")
    assert (case["state"], [t["name"] for t in case["open_tasks"]]) == ("open", ["assign"])
    wait_until(lambda: chain.complaint(case_id)["status"] == "received",
               "intake to follow the case converted after it closed")
    complaint = chain.complaint(case_id)
    assert (complaint["kind"], complaint["closed_at"]) == ("complaint", None)


def test_an_inquiry_converted_while_investigation_answers_it_ends_an_open_complaint_on_both_sides(chain):
    """Intake converts first but investigation hears it only after it answered the inquiry."""
    case_id = chain.inquiry()
    chain.stop_relay("intake")  # the conversion waits in intake's outbox
    try:
        assert chain.convert(case_id, {"category": "safety"}).status_code == 200
        assert chain.answer(case_id).status_code == 200
        wait_until(lambda: chain.complaint(case_id)["status"] == "closed", "intake to hear the inquiry closed")
    finally:
        chain.start_relay("intake")
    chain.wait_for_case(case_id, lambda c: c["kind"] == "complaint" and c["state"] == "open")
    wait_until(lambda: chain.complaint(case_id)["status"] == "received", "intake to follow the conversion")
    assert chain.complaint(case_id)["closed_at"] is None
    refused = chain.convert(case_id, {"category": "safety"})
    assert (refused.status_code, jsonbody(refused)["error"]["code"]) == (409, "not_an_inquiry")


def test_the_console_s_conversion_sends_the_flags_as_shown_and_refuses_what_it_should(chain):
    """The form shows the inquiry's flags ticked: one unticked is no longer the complaint's (it
    would have kept the inquiry's, urgent). Without the session's CSRF token, for a case of
    another branch, for an id that names no inquiry: refused, never converted."""
    case_id = chain.inquiry(severity_flags=["allergy"])
    fran = chain.browser("fran")
    page = fran.get(f"/cases/{case_id}").text
    assert 'name="flag.allergy" value="on" checked' in page
    token = csrf_of(page)
    assert fran.post(f"/cases/{case_id}/convert", {"category": "price"}).status_code == 403  # no CSRF token
    bo = chain.browser("bo")  # Beijing's front desk
    assert bo.post(f"/cases/{case_id}/convert", {"category": "price",
                                                  "csrf_token": bo.csrf("/complaints/new")}).status_code == 404
    assert chain.complaint(case_id)["kind"] == "inquiry"
    sent = fran.post(f"/cases/{case_id}/convert", {"category": "price", "csrf_token": token})  # allergy unticked
    assert sent.status_code == 303, sent.text[:500]
    complaint = chain.complaint(case_id)
    assert (complaint["kind"], complaint["severity_flags"], complaint["priority"]) == ("complaint", [], "general")
    for path in ("/cases/not-an-id!/convert", f"/cases/{uuid.uuid4()}/convert"):
        assert fran.post(path, {"category": "price", "csrf_token": token}).status_code == 404


def test_an_inquiry_converted_keeps_no_timer_of_its_own(chain):
    """Converted an hour after its receipt into a general complaint (first response due when the
    inquiry's answer was: 24 hours after the receipt), the case warns and breaches once per clock
    and level, by the complaint's timers alone."""
    case_id = chain.inquiry(category="price")
    chain.clock.advance(hours=1)
    assert chain.convert(case_id, {"category": "price"}).status_code == 200
    chain.wait_for_case(case_id, lambda c: c["kind"] == "complaint")
    chain.clock.advance(hours=24)

    def kinds() -> list[str]:
        return [e["what"] for e in chain.case(case_id)["timeline"]]
    wait_until(lambda: "sla_breached" in kinds(), "the complaint's first response to breach")
    [(process, due)] = database_rows(chain.databases["investigation"], sa.text(
        "SELECT process_id, next_timer_due FROM process_instances WHERE id = :id").bindparams(id=case_id))
    assert process == "complaint_case" and due > chain.clock.now()  # nothing else due: no inquiry timer left
    timeline = [(e["what"], e["detail"].get("clock"), e["detail"].get("level"))
                for e in chain.case(case_id)["timeline"]]
    fired = [t for t in timeline if t[0] in ("sla_warning", "sla_breached")]
    assert fired == [("sla_warning", "first_response", None), ("sla_breached", "first_response", 1)], timeline
