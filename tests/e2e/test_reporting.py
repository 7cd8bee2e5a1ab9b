"""Reporting end to end over the real bus (issue 11): intake, investigation, aftercare and
reporting in the test process on one clock the tests move, with their relays and senders.
What the branches do reaches reporting as events; HQ reads KPIs, alerts and exports."""
from datetime import datetime, timezone

import kombu
import pytest

from shared.messaging.consumer import handlers_of
from shared.runtime.config import service_class
from shared.testing.fixtures import jsonbody, wait_until
from tests.e2e.test_investigation_cases import COMPLAINT_REQUEST, Chain, bearer

pytestmark = pytest.mark.e2e
HQ = ("hq_analyst", "*")


def purge_reporting_queues(amqp_uri: str) -> None:
    """Reporting's queues take every event of the other services, also those of tests that ran
    without reporting: what an earlier test left there is not this chain's."""
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        for handler in handlers_of(service_class("reporting"), (1000,)):
            handler.queue()(channel).declare()
            channel.queue_purge(handler.queue_name)


@pytest.fixture
def chain(http, token, clock, amqp_uri, start_service, start_relay, start_sender, database_factory, bus_listener):
    from services.intake.service import IntakeService

    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))  # 10:00 in Shanghai, a Sunday
    purge_reporting_queues(amqp_uri)
    cases_bus = bus_listener("investigation.events")
    alerts_bus = bus_listener("reporting.events")
    databases = {name: database_factory(name) for name in ("intake", "investigation", "aftercare", "reporting")}
    services = {name: start_service(name, clock=clock, database_url=url) for name, url in databases.items()}
    for url in databases.values():
        start_relay(url)
    staff = start_sender(databases["investigation"], service="investigation")
    customers = start_sender(databases["intake"], service="intake", on_outcome=IntakeService.message_outcome)
    chain = Chain(http, token, services["intake"], services["investigation"], staff, customers, cases_bus, clock)
    chain.aftercare, chain.reporting, chain.alerts_bus, chain.databases = (
        services["aftercare"], services["reporting"], alerts_bus, databases)
    return chain


def kpis(chain, role=HQ, **query) -> tuple[int, dict]:
    answer = chain.http.get(chain.reporting.url("/v1/kpis"), params=query,
                            headers=bearer(chain.token(role[0], branch=role[1])), timeout=10)
    return answer.status_code, jsonbody(answer)


def test_complaints_reach_the_kpis_and_three_of_a_category_raise_a_recurring_problem(chain):
    body = {**COMPLAINT_REQUEST, "category": "hygiene_environment", "severity_flags": [], "service": None,
            "products": [], "description": "毛巾不干净"}
    ids = [chain.post_complaint(body)["id"] for _ in range(3)]
    wait_until(lambda: kpis(chain)[1]["totals"]["volume"]["complaints"] == 3, "the complaints in the KPIs")
    status, figures = kpis(chain, group_by="branch")
    assert status == 200 and [g["key"] for g in figures["groups"]] == ["SH001"]
    assert figures["totals"]["volume"]["by_category"] == {"hygiene_environment": 3}
    [alert] = [m["body"] for m in chain.alerts_bus.wait_for(
        lambda m: m["body"]["type"] == "recurring_problem_detected", 15)]
    assert alert["payload"]["by"] == "branch_category" and sorted(alert["payload"]["case_ids"]) == sorted(ids)
