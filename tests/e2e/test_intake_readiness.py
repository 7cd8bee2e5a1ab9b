"""Readiness of a running intake: a dead relay or a consumer that lost the broker is no
longer `ok` (it was: /health only asked whether a fresh connection could be opened). A dead
relay is said (`degraded`, 200) but keeps the replica in service: the outbox holds the events."""
from datetime import datetime, timezone

import pytest
from shared.messaging.consumer import RawQueueConsumer

from shared.calendar.clock import ManualClock
from shared.testing.fixtures import wait_until
from tests.e2e.test_intake_http import COMPLAINT, post

pytestmark = pytest.mark.e2e


@pytest.fixture
def intake(start_service, start_relay, database_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOSELOOP_RUN_DIR", str(tmp_path))  # no relay heartbeat of another run in sight
    url = database_factory("intake")
    service = start_service("intake", database_url=url, READY_OUTBOX_LAG_SECONDS=1,
                            clock=ManualClock(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)))
    service.database_url, service.relay = url, start_relay(url)
    return service


def readiness(http, intake, path="/health/ready"):
    response = http.get(intake.url(path), timeout=10)
    return response.status_code, response.json()


def test_a_ready_replica_answers_ok_on_both_paths(http, intake):
    code, body = wait_until(lambda: (r := readiness(http, intake))[0] == 200 and r, "intake to be ready")
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["checks"]["consumer"] == {"status": "ok"} and body["checks"]["relay"] == {"status": "unknown"}
    code, alias = readiness(http, intake, "/health")
    assert code == 200 and {"service", "status", "checks", "outbox"} <= set(alias)
    assert set(alias["outbox"]) == {"pending", "oldest_age_seconds", "notifications_pending", "notifications_failed"}


def test_a_dead_relay_is_reported_degraded_until_a_relay_runs_again(http, intake, token, start_relay):
    intake.relay.stop()
    intake.relay.thread.wait()
    front_desk = token("front_desk", branch="SH001")
    assert post(http, intake, "/v1/complaints", COMPLAINT, front_desk).status_code == 201

    def degraded():
        code, body = readiness(http, intake)
        return code == 200 and body["status"] == "degraded" and body
    body = wait_until(degraded, "readiness to notice the unsent event", timeout=30)
    assert body["outbox"]["pending"] == 1
    [reason] = body["reasons"]
    assert "oldest unsent event" in reason and "relay" in reason
    assert readiness(http, intake, "/health")[1]["status"] == "degraded"
    # Still in service: complaints keep being accepted into the outbox.
    assert post(http, intake, "/v1/complaints", {**COMPLAINT, "description": "第二次"}, front_desk).status_code == 201

    start_relay(intake.database_url)
    code, body = wait_until(lambda: (r := readiness(http, intake))[1]["status"] == "ok" and r,
                            "readiness after the relay", timeout=30)
    assert body["status"] == "ok" and body["outbox"]["pending"] == 0 and body["reasons"] == []


def test_a_replica_whose_own_consumer_lost_the_broker_is_not_ready(http, intake):
    wait_until(lambda: readiness(http, intake)[0] == 200, "intake to be ready")
    [container] = intake.runner.containers
    [queue_consumer] = [e for e in container.subextensions if isinstance(e, RawQueueConsumer)]
    queue_consumer._gt.kill()  # the event consumer ends; HTTP and a fresh connection still work

    def not_ready():
        code, body = readiness(http, intake)
        return code == 503 and body
    body = wait_until(not_ready, "readiness to notice the consumer is gone", timeout=30)
    assert body["checks"]["consumer"] == {"status": "disconnected"} and body["checks"]["broker"]["status"] == "ok"
    assert body["reasons"] == ["this replica's event consumer is not connected to the broker"]


def test_a_database_that_hangs_makes_probes_say_down_and_requests_fail_fast(http, start_service, database_factory,
                                                                           tcp_proxy, token, monkeypatch, tmp_path):
    """A database that keeps the connection open and answers nothing (a hung proxy or
    pooler): probes answer within their patience and say "down", a POST gets a 503 once the
    statement's wait runs out instead of holding a worker for good, and all is well again
    when the database answers."""
    import concurrent.futures

    from shared.runtime import green

    monkeypatch.setenv("CLOSELOOP_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(green, "DATABASE_WAIT_SECONDS", 3.0)
    proxy, url = tcp_proxy(database_factory("intake"), 5432)
    service = start_service("intake", database_url=url, max_workers=4)
    wait_until(lambda: readiness(http, service)[0] == 200, "intake to be ready")
    proxy.silence()
    try:
        def eight_probes():  # each within its 10 s timeout, or the test fails
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: readiness(http, service), range(8)))
            return {(code, body["status"]) for code, body in answers} == {(503, "down")}

        wait_until(eight_probes, "every probe to say down once the cached answer is stale", interval=0.5)
        front_desk = token("front_desk", branch="SH001")
        refused = post(http, service, "/v1/complaints", COMPLAINT, front_desk)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert http.get(service.url("/health/live"), timeout=5).status_code == 200
    finally:
        proxy.restore()
    wait_until(lambda: readiness(http, service)[0] == 200, "intake to be ready again", timeout=60, interval=0.5)
    assert post(http, service, "/v1/complaints", COMPLAINT, front_desk).status_code == 201
