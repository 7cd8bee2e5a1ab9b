"""While RabbitMQ is unreachable intake keeps accepting complaints, reports the broker
degraded, and the relay delivers everything once the broker is back. The connection is
cut by killing a TCP proxy process; the shared broker itself is never touched."""
from datetime import datetime, timezone

import pytest

from shared.calendar.clock import ManualClock
from shared.testing.fixtures import wait_until
from tests.e2e.test_intake_http import COMPLAINT, complaint

pytestmark = pytest.mark.e2e


def test_intake_accepts_while_the_broker_is_away_and_nothing_is_lost(
        http, start_service, start_relay, database_factory, bus_listener, tcp_proxy, amqp_uri, token):
    events = bus_listener("intake.events", "complaint_registered")  # on the real broker
    proxy, proxied = tcp_proxy(amqp_uri, 5672)
    url = database_factory("intake")
    intake = start_service("intake", database_url=url, amqp=proxied,
                           clock=ManualClock(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)))
    start_relay(url, amqp=proxied)
    front_desk = token("front_desk", branch="SH001")
    headers = {"Authorization": f"Bearer {front_desk}"}

    first = http.post(intake.url("/v1/complaints"), json=COMPLAINT, headers=headers, timeout=10).json()
    events.wait_for(lambda m: m["body"]["correlation_id"] == first["id"])

    proxy.cut()
    accepted = []
    for n in range(20):
        response = http.post(intake.url("/v1/complaints"), json=complaint(description=f"毛巾很脏 {n}"),
                             headers=headers, timeout=10)
        assert response.status_code == 201, response.text
        accepted.append(response.json()["id"])

    def degraded():
        body = http.get(intake.url("/health"), timeout=10)
        return body.status_code == 200 and body.json()["status"] == "degraded" and body.json()
    health = wait_until(degraded, "health to report the broker degraded")
    assert health["checks"]["broker"]["status"] == "degraded"
    assert health["checks"]["database"]["status"] == "ok"
    assert health["outbox"]["pending"] >= 20

    proxy.restore()
    events.wait_for(lambda m: m["body"]["correlation_id"] in accepted, timeout=30, count=20)
    wait_until(lambda: http.get(intake.url("/health"), timeout=10).json()["status"] == "ok", "health to recover")
    assert http.get(intake.url("/health"), timeout=10).json()["outbox"]["pending"] == 0


def test_without_its_database_intake_answers_503_and_recovers(
        http, start_service, database_factory, tcp_proxy, token):
    url = database_factory("intake")
    proxy, proxied = tcp_proxy(url, 5432)
    intake = start_service("intake", database_url=proxied)
    headers = {"Authorization": f"Bearer {token('front_desk', branch='SH001')}"}
    assert http.post(intake.url("/v1/complaints"), json=COMPLAINT, headers=headers, timeout=10).status_code == 201

    proxy.cut()
    refused = http.post(intake.url("/v1/complaints"), json=COMPLAINT, headers=headers, timeout=20)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable" and refused.headers["Retry-After"] == "2"
    health = http.get(intake.url("/health"), timeout=20)
    assert health.status_code == 503 and health.json()["checks"]["database"]["status"] == "down"

    proxy.restore()
    wait_until(lambda: http.post(intake.url("/v1/complaints"), json=COMPLAINT, headers=headers,
                                 timeout=20).status_code == 201, "intake to accept again")
    # readiness is cached for a second: it follows within that
    wait_until(lambda: http.get(intake.url("/health"), timeout=10).status_code == 200, "health to recover")
