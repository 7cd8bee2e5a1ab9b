"""An HQ admin's legal hold over HTTP, end to end: investigation answers in the API's error order,
writes the hold, its timeline entry and its event together, and intake, following the event over
the real bus, keeps the complaint's contact while it holds. Both services run their daily
retention on their own timer."""
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from shared.persistence.anonymisation import RUNS
from shared.testing.fixtures import database_rows, jsonbody, wait_until
from shared.testing.samples import COMPLAINT_REQUEST

pytestmark = pytest.mark.e2e


def bearer(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def chain(http, token, clock, start_service, start_relay, database_factory, bus_listener):
    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))
    bus = bus_listener("investigation.events")
    urls = {name: database_factory(name) for name in ("investigation", "intake")}
    services = {}
    for name, url in urls.items():  # a retention tick every 0.2 s: each runs once on the still clock
        services[name] = start_service(name, clock=clock, database_url=url, RETENTION_INTERVAL_SECONDS=0.2)
        start_relay(url)
    return services, urls, bus


def test_an_hq_admin_holds_a_case_and_intake_keeps_its_contact_until_released(chain, http, token, clock):
    services, urls, bus = chain
    intake, investigation = services["intake"], services["investigation"]
    posted = http.post(intake.url("/v1/complaints"), json=COMPLAINT_REQUEST,
                       headers=bearer(token("front_desk", branch="SH001")), timeout=10)
    case_id = jsonbody(posted)["id"]
    wait_until(lambda: http.get(investigation.url(f"/v1/cases/{case_id}"),
                                headers=bearer(token("store_manager", branch="SH001"))).status_code == 200,
               "the case to open")
    hold_url = investigation.url(f"/v1/cases/{case_id}/legal-hold")
    admin = bearer(token("hq_admin", subject="hq-1"))

    def put(url, body, headers):
        return http.put(url, json=body, headers=headers, timeout=10)
    assert put(hold_url, {"reason": "诉讼"}, {}).status_code == 401
    assert put(hold_url, {"reason": "诉讼"}, bearer(token("hq_admin", branch="BJ001"))).status_code == 404
    assert put(investigation.url("/v1/cases/not-a-case/legal-hold"), {"reason": "诉讼"}, admin).status_code == 404
    assert put(investigation.url(f"/v1/cases/{uuid.uuid4()}/legal-hold"), {"reason": "诉讼"}, admin).status_code == 404
    forbidden = put(hold_url, {}, bearer(token("store_manager", branch="SH001")))  # 403 before the body
    assert forbidden.status_code == 403 and "hq_admin" in jsonbody(forbidden)["error"]["message"]
    bad = put(hold_url, {"reason": " ", "until": "forever"}, admin)
    assert bad.status_code == 400 and set(jsonbody(bad)["error"]["fields"]) == {"reason", "until"}

    held = put(hold_url, {"reason": "顾客起诉，保全证据"}, admin)
    assert held.status_code == 200, held.text
    assert jsonbody(held)["legal_hold"] == {"reason": "顾客起诉，保全证据", "by": "hq-1", "at": "2026-11-22T02:00:00Z"}
    [event] = [m["body"] for m in bus.wait_for(lambda m: m["body"]["type"] == "legal_hold_set")]
    assert (event["correlation_id"], event["payload"]["reason"], event["payload"]["actor_role"]) == \
        (case_id, "顾客起诉，保全证据", "hq_admin")
    assert event["sequence"] > 1  # after case_opened: the case's own count
    complaint_hold = sa.text("SELECT legal_hold FROM complaints WHERE id = :id").bindparams(id=case_id)
    wait_until(lambda: database_rows(urls["intake"], complaint_hold)[0][0] is not None, "intake to follow the hold")
    timeline = jsonbody(http.get(investigation.url(f"/v1/cases/{case_id}"), headers=admin))["timeline"]
    assert ("legal_hold_set", "hq-1", "hq_admin") in [(e["what"], e["actor"], e["role"]) for e in timeline]

    assert http.delete(hold_url, headers=bearer(token("regional_manager", region="east"))).status_code == 403
    released = http.delete(hold_url, headers=admin, timeout=10)
    assert released.status_code == 200 and jsonbody(released)["legal_hold"] is None
    bus.wait_for(lambda m: m["body"]["type"] == "legal_hold_released")
    wait_until(lambda: database_rows(urls["intake"], complaint_hold)[0][0] is None, "intake to follow the release")

    # Each service ran its retention on its own timer, once for the clock that stands still.
    for url in urls.values():
        runs = wait_until(lambda: database_rows(url, sa.select(RUNS.c.as_of, RUNS.c.dry_run)), "a retention run")
        assert runs == [(clock.now(), False)]
