"""Agents' claims on visits, end to end: intake (with its relay) and aftercare run once for the
module in the test process, on one clock the tests move forward. A sale posted to intake plans its
visit; agents claim it over HTTP (`POST /v1/visits/{id}/claim`): a colleague is refused 409 naming
who holds it, the same agent claiming again extends it, a claim runs out on the clock, of agents
claiming together exactly one wins, an attempt ends the claim, `GET /v1/visits?unclaimed=true`
leaves out what colleagues hold; scope, roles and bodies are checked in the API's order."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import eventlet
import pytest
import requests

from shared.calendar.clock import ManualClock
from shared.messaging.relay import Relay
from shared.persistence import db
from shared.security import auth
from shared.testing.fixtures import free_port, jsonbody, purge_queues_of, stop_runners, wait_until
from tests.e2e.test_aftercare_visits import ANSWERS, SALE

pytestmark = pytest.mark.e2e
START = datetime.fromisoformat("2026-11-24T10:00:00+08:00")  # SALE's allergy check fell due at 09:00


class Desk:
    """The running services, an HTTP session and a clock; tokens for any staff member."""

    def __init__(self, urls: dict, clock: ManualClock):
        self.urls, self.clock, self.http = urls, clock, requests.Session()

    def headers(self, who: str, role: str = "aftercare_agent", branch: str | None = "SH001",
                region: str | None = None) -> dict:
        token = auth.issue_token(role=role, subject=who, branch=None if region else branch, region=region)
        return {"Authorization": f"Bearer {token}"}

    def sale(self, body: dict = SALE) -> str:
        """A sale posted to intake; its visit's id once aftercare planned it."""
        answer = self.http.post(self.urls["intake"] + "/v1/sales", json=body,
                                headers=self.headers("till", "front_desk"), timeout=10)
        assert answer.status_code == 201, answer.text
        sale_id = jsonbody(answer)["id"]

        def planned():
            listed = self.list("planner", status="scheduled")
            return next((v["id"] for v in listed["items"] if v["sale_id"] == sale_id), None)
        return wait_until(planned, "aftercare to plan the sale's visit")

    def list(self, who: str, **query) -> dict:
        """`who`'s queue (an SH001 agent's) with `query`."""
        answer = self.http.get(self.urls["aftercare"] + "/v1/visits", params={"limit": 200, **query},
                               headers=self.headers(who), timeout=10)
        assert answer.status_code == 200, answer.text
        return jsonbody(answer)

    def claim(self, visit_id: str, who: str, body=None, role: str = "aftercare_agent", branch: str | None = "SH001",
              region: str | None = None):
        """POST .../claim as `who`, with `body` as JSON (None: no body at all)."""
        return self.http.post(self.urls["aftercare"] + f"/v1/visits/{visit_id}/claim", json=body,
                              headers=self.headers(who, role, branch, region), timeout=10)

    def release(self, visit_id: str, who: str, role: str = "aftercare_agent", branch: str | None = "SH001",
                region: str | None = None):
        return self.http.delete(self.urls["aftercare"] + f"/v1/visits/{visit_id}/claim",
                                headers=self.headers(who, role, branch, region), timeout=10)

    def visit(self, visit_id: str, who: str = "reader") -> dict:
        answer = self.http.get(self.urls["aftercare"] + f"/v1/visits/{visit_id}", headers=self.headers(who),
                               timeout=10)
        assert answer.status_code == 200, answer.text
        return jsonbody(answer)

    def attempt(self, visit_id: str, who: str, body: dict):
        return self.http.post(self.urls["aftercare"] + f"/v1/visits/{visit_id}/attempts", json=body,
                              headers=self.headers(who), timeout=10)


@pytest.fixture(scope="module")
def desk(amqp_uri, database_factory):
    """Intake, its relay and aftercare, started once for the module on one clock (10:00 in
    Shanghai on the day SALE's allergy check is due); the tests only move it forward."""
    from nameko.runners import ServiceRunner

    from shared.runtime import config

    purge_queues_of(amqp_uri, "aftercare")  # not this module's: sales other tests left there
    clock = ManualClock(START)
    runners, urls, databases = [], {}, {}
    for name in ("intake", "aftercare"):
        databases[name] = database_factory(name)
        port = free_port()
        settings = config.service_config(name, env={}, AMQP_URI=amqp_uri, DATABASE_URL=databases[name],
                                         WEB_SERVER_ADDRESS=f"127.0.0.1:{port}", CLOCK=clock,
                                         CUSTOMER_REF_KEY="test-customer-ref-key", DB_POOL_SIZE=5)
        runner = ServiceRunner(settings)
        runner.add_service(config.service_class(name))
        runner.start()
        runners.append(runner)
        urls[name] = f"http://127.0.0.1:{port}"
    relay = Relay(db.make_engine(databases["intake"], 2), amqp_uri)
    relay.thread = eventlet.spawn(relay.run)
    desk = Desk(urls, clock)
    yield desk
    desk.http.close()
    relay.stop()
    relay.thread.wait()
    relay.engine.dispose()
    stop_runners(runners)


def error(answer) -> dict:
    return jsonbody(answer)["error"]


def test_a_claim_keeps_colleagues_off_until_it_runs_out_and_the_same_agent_extends_it(desk):
    visit_id = desk.sale()
    now = desk.clock.now()
    claimed = desk.claim(visit_id, "ann")  # no body: the policy's 10 minutes
    assert claimed.status_code == 200, claimed.text
    shown = jsonbody(claimed)
    assert shown["id"] == visit_id and shown["claimed_by"] == "ann"
    assert datetime.fromisoformat(shown["claimed_until"]) == now + timedelta(minutes=10)
    read = desk.visit(visit_id)
    assert (read["claimed_by"], read["claimed_until"]) == ("ann", shown["claimed_until"])
    [listed] = [v for v in desk.list("reader")["items"] if v["id"] == visit_id]
    assert listed["claimed_by"] == "ann"

    refused = desk.claim(visit_id, "bo")
    assert refused.status_code == 409
    assert error(refused)["code"] == "claimed" and "ann" in error(refused)["message"]
    assert (error(refused)["claimed_by"], error(refused)["claimed_until"]) == ("ann", shown["claimed_until"])

    desk.clock.advance(minutes=5)
    again = jsonbody(desk.claim(visit_id, "ann", {"minutes": 10}))  # the same agent: extended
    assert datetime.fromisoformat(again["claimed_until"]) == now + timedelta(minutes=15)
    desk.clock.advance(minutes=9, seconds=59)
    assert desk.claim(visit_id, "bo").status_code == 409  # a second before its end: still ann's
    desk.clock.advance(seconds=1)
    assert desk.visit(visit_id)["claimed_by"] is None  # run out: nobody's
    taken = desk.claim(visit_id, "bo", {"minutes": 1})
    assert taken.status_code == 200 and jsonbody(taken)["claimed_by"] == "bo"
    assert datetime.fromisoformat(jsonbody(taken)["claimed_until"]) == desk.clock.now() + timedelta(minutes=1)
    desk.clock.advance(minutes=1)
    assert desk.claim(visit_id, "ann").status_code == 200  # bo's minute ran out


def test_of_agents_claiming_at_once_exactly_one_wins(desk):
    visit_id = desk.sale()
    agents = [f"agent-{n}" for n in range(8)]
    answers = list(eventlet.GreenPool(len(agents)).imap(lambda who: (who, desk.claim(visit_id, who)), agents))
    won = [who for who, answer in answers if answer.status_code == 200]
    assert len(won) == 1, [(who, a.status_code) for who, a in answers]
    lost = [answer for who, answer in answers if who not in won]
    assert {a.status_code for a in lost} == {409}
    assert {error(a)["code"] for a in lost} == {"claimed"} and {error(a)["claimed_by"] for a in lost} == set(won)
    assert desk.visit(visit_id)["claimed_by"] == won[0]


def test_an_attempt_ends_the_claim_and_a_finished_visit_is_claimed_no_more(desk):
    visit_id = desk.sale()
    assert desk.claim(visit_id, "ann").status_code == 200
    called = desk.attempt(visit_id, "ann", {"outcome": "call_back",
                                            "call_back_at": (desk.clock.now() + timedelta(hours=2)).isoformat()})
    assert called.status_code == 200, called.text
    assert (jsonbody(called)["claimed_by"], jsonbody(called)["claimed_until"]) == (None, None)
    assert desk.visit(visit_id)["claimed_by"] is None
    assert desk.claim(visit_id, "bo").status_code == 200  # free for a colleague now
    # bo's claim ends with the call that completes the visit, whoever records it.
    reached = desk.attempt(visit_id, "bo", {"outcome": "reached", "answers": ANSWERS})
    assert reached.status_code == 200 and jsonbody(reached)["claimed_by"] is None
    finished = desk.claim(visit_id, "bo")
    assert finished.status_code == 409 and error(finished)["code"] == "conflict"
    assert "completed" in error(finished)["message"]
    assert desk.claim(visit_id, "bo", {"minutes": 0}).status_code == 409  # finished: before the body
    assert desk.release(visit_id, "bo").status_code == 200  # nothing to release: nothing changes


def test_the_unclaimed_queue_leaves_out_what_colleagues_hold_and_release_puts_it_back(desk):
    ann_s, bo_s, free = desk.sale(), desk.sale(), desk.sale()
    assert desk.claim(ann_s, "ann").status_code == 200
    assert desk.claim(bo_s, "bo").status_code == 200
    mine = [v["id"] for v in desk.list("ann", unclaimed="true")["items"]]
    assert ann_s in mine and free in mine and bo_s not in mine  # ann's own claim stays in her queue
    everything = {v["id"]: v for v in desk.list("ann")["items"]}
    assert everything[bo_s]["claimed_by"] == "bo" and everything[free]["claimed_by"] is None
    assert desk.list("ann", unclaimed="false")["items"] == desk.list("ann")["items"]

    refused = desk.release(bo_s, "ann")  # own claims only
    assert refused.status_code == 409 and error(refused)["claimed_by"] == "bo"
    released = desk.release(bo_s, "bo")
    assert released.status_code == 200 and jsonbody(released)["claimed_by"] is None
    assert bo_s in [v["id"] for v in desk.list("ann", unclaimed="true")["items"]]
    assert desk.release(bo_s, "bo").status_code == 200  # again: nothing changes
    desk.clock.advance(minutes=10)  # ann's ran out: in everyone's queue again
    assert ann_s in [v["id"] for v in desk.list("bo", unclaimed="true")["items"]]


def test_scope_roles_and_bodies_in_the_api_s_order(desk):
    visit_id = desk.sale()
    for unknown in (str(uuid.uuid4()), "not-a-visit"):
        assert desk.claim(unknown, "ann").status_code == 404
        assert desk.release(unknown, "ann").status_code == 404
    assert desk.claim(visit_id, "ann", branch="SH002").status_code == 404  # another branch's visit
    assert desk.claim(visit_id, "sm", role="store_manager", branch="SH002").status_code == 404
    assert desk.release(visit_id, "ann", branch="SH002").status_code == 404
    for role, scope in (("front_desk", {"branch": "SH001"}), ("hq_analyst", {"branch": "*"}),
                        ("regional_manager", {"region": "east"})):  # they may read it, not claim it
        read = desk.http.get(desk.urls["aftercare"] + f"/v1/visits/{visit_id}",
                             headers=desk.headers("x", role, **scope), timeout=10)
        assert read.status_code == (403 if role == "front_desk" else 200)
        claim, release = desk.claim(visit_id, "x", role=role, **scope), desk.release(visit_id, "x", role=role, **scope)
        assert (claim.status_code, release.status_code) == (403, 403), (role, claim.text)
    assert desk.claim(visit_id, "fd", {"minutes": 0}, role="front_desk").status_code == 403  # before the body
    for manager, role, branch in (("sm", "store_manager", "SH001"), ("hq", "hq_admin", "*")):
        assert desk.claim(visit_id, manager, {"minutes": 1}, role=role, branch=branch).status_code == 200
        desk.clock.advance(minutes=1)

    for body, named in (({"minutes": 0}, {"minutes"}), ({"minutes": 61}, {"minutes"}),
                        ({"minutes": "5"}, {"minutes"}), ({"minutes": True}, {"minutes"}),
                        ({"minutes": 5, "hours": 1}, {"hours"}), ([5], {"_body"})):
        bad = desk.claim(visit_id, "ann", body)
        assert bad.status_code == 400 and set(error(bad)["fields"]) == named, (body, bad.text)
    plain = desk.http.post(desk.urls["aftercare"] + f"/v1/visits/{visit_id}/claim", data="minutes=5",
                           headers={**desk.headers("ann"), "Content-Type": "text/plain"}, timeout=10)
    assert plain.status_code == 415
    assert desk.visit(visit_id)["claimed_by"] is None  # nothing refused left a claim
    assert desk.claim(visit_id, "ann", {"minutes": 60}).status_code == 200
