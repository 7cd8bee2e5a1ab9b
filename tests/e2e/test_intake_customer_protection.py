"""What a poster can make intake send to customers, on real processes: the acknowledgement
carries only the policy's template and a checked name, goes by SMS only to allowed
countries, within limits that hold across replicas; and the relay's log shows masked
names and numbers only."""
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from shared.calendar.policy import DEFAULT_POLICY_PATH
from shared.messaging.envelope import build_event
from shared.messaging.relay import Publisher
from shared.testing.fixtures import jsonbody, wait_until
from shared.testing.samples import COMPLAINT_REQUEST

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PER_POSTER, PER_RECIPIENT = 5, 2


@pytest.fixture
def policy_file(tmp_path) -> Path:
    doc = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    doc["intake"]["customer_messages"].update(
        sms_country_codes=["+86", "+1"], per_poster={"messages": PER_POSTER, "per": "PT1M"},
        per_recipient={"messages": PER_RECIPIENT, "per": "PT1H"})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def replicas(start_service, database_factory, policy_file):
    """Two intake replicas on one database, as `--scale intake=2` runs them."""
    url = database_factory("intake")
    return url, [start_service("intake", database_url=url, POLICY_FILE=str(policy_file)) for _ in range(2)]


def post(http, service, body, token):
    response = http.post(service.url("/v1/complaints"), json=body, headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
    return response, jsonbody(response)


def with_customer(**customer):
    return {**COMPLAINT_REQUEST, "customer": {**COMPLAINT_REQUEST["customer"], **customer}}


def rows(url, sql, **params):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def test_a_name_cannot_carry_a_posters_text_into_the_sms(http, replicas, token):
    url, (intake, _) = replicas
    desk = token("front_desk", branch="SH001")
    for name in ("【中奖通知】请访问 http://x.cn 领取", "王女士 4001234567", "\u202e士女王"):
        response, body = post(http, intake, with_customer(name=name), desk)
        assert response.status_code == 400 and list(body["error"]["fields"]) == ["customer.name"], body
    response, body = post(http, intake, {**COMPLAINT_REQUEST, "description": "\u200b\u200c\u2060"}, desk)
    assert response.status_code == 400 and body["error"]["fields"] == {
        "description": ["required (nothing visible is left once invisible characters are removed)"]}
    assert rows(url, "SELECT count(*) FROM complaints")[0][0] == 0

    response, body = post(http, intake, with_customer(name="\u200b王女士\u200b"), desk)
    assert response.status_code == 201
    [(text,)] = rows(url, "SELECT body FROM notifications")
    assert text.startswith("王女士，您好！我们已收到您在上海静安店的投诉") and "\u200b" not in text


def test_a_number_abroad_is_kept_but_not_sent_an_sms(http, replicas, token):
    url, (intake, _) = replicas
    desk = token("front_desk", branch="SH001")
    response, abroad = post(http, intake, with_customer(phone="+447911123456"), desk)
    assert response.status_code == 201 and abroad["customer"]["phone"] == "+447******456"
    response, with_email = post(http, intake, with_customer(phone="+447911123457", email="anne@example.com"), desk)
    assert response.status_code == 201
    assert rows(url, "SELECT count(*) FROM complaints")[0][0] == 2
    assert [tuple(r) for r in rows(url, "SELECT channel, recipient, subject_id FROM notifications")] == [
        ("email", "anne@example.com", with_email["id"])]


def test_a_poster_over_its_limit_gets_429_whichever_replica_it_asks(http, replicas, token):
    url, intakes = replicas
    desk = token("front_desk", branch="SH001", subject="till-7")
    answers = [post(http, intakes[n % 2], with_customer(phone=f"1381234{n:04d}"), desk) for n in range(PER_POSTER + 1)]
    assert [r.status_code for r, _ in answers] == [201] * PER_POSTER + [429]
    response, body = answers[-1]
    assert body["error"]["code"] == "too_many_requests" and "till-7" in body["error"]["message"]
    # One more each 60 s / 5 = 12 s: the wait is that, give or take the test's own time.
    assert response.headers["Retry-After"] == str(body["error"]["retry_after"])
    assert 1 <= body["error"]["retry_after"] <= 12
    assert rows(url, "SELECT count(*) FROM complaints")[0][0] == PER_POSTER  # nothing stored
    # Another poster is not held back by this one.
    response, _ = post(http, intakes[0], COMPLAINT_REQUEST, token("front_desk", branch="SH001", subject="till-8"))
    assert response.status_code == 201


def test_a_customers_contact_gets_its_share_of_acknowledgements_and_every_complaint_is_kept(
        http, replicas, token):
    url, intakes = replicas
    ids = []
    for n in range(PER_RECIPIENT + 2):  # different tills, the same customer
        response, body = post(http, intakes[n % 2], COMPLAINT_REQUEST, token("front_desk", branch="SH001"))
        assert response.status_code == 201, body
        ids.append(body["id"])
    assert rows(url, "SELECT count(*) FROM complaints")[0][0] == PER_RECIPIENT + 2
    sent = rows(url, "SELECT subject_id FROM notifications WHERE recipient = '13812346138' ORDER BY id")
    assert [r[0] for r in sent] == ids[:PER_RECIPIENT]
    # The limit knows the contact by its keyed hash only.
    assert not rows(url, "SELECT key FROM message_limits WHERE key LIKE '%13812346138%'")


def test_the_relay_process_logs_masked_names_and_numbers_only(http, replicas, token, amqp_uri, policy_file,
                                                               tmp_path):
    url, (intake, _) = replicas
    body = {**COMPLAINT_REQUEST, "customer": {"name": "Anne Smith", "phone": "+1234567", "language": "en"}}
    response, complaint = post(http, intake, body, token("front_desk", branch="SH001"))
    assert response.status_code == 201, complaint
    text = "Dear Ms SMITH, we called ANNE SMITH on +1 234 567 and will redo your colour for free."
    asked = build_event("customer_message_requested",
                        {"record_type": "complaint", "record_id": complaint["id"], "purpose": "written_result",
                         "text": text, "language": "en", "channels": ["sms"]},
                        branch_code="SH001", correlation_id=complaint["id"], sequence=7, source="investigation",
                        occurred_at=datetime.now(timezone.utc))
    publisher = Publisher(amqp_uri)
    try:
        publisher.publish_batch([("investigation.events", asked["type"], json.dumps(asked), asked["event_id"])])
    finally:
        publisher.close()
    wait_until(lambda: len(rows(url, "SELECT id FROM notifications")) == 2, "the requested message to be queued",
               timeout=30)

    log_path = tmp_path / "relay.log"
    env = {**os.environ, "AMQP_URI": amqp_uri, "INTAKE_DATABASE_URL": url, "CLOSELOOP_RUN_DIR": str(tmp_path),
           "CLOSELOOP_NOTIFIER": "log", "CLOSELOOP_POLICY_FILE": str(policy_file), "LOG_LEVEL": "INFO"}
    with open(log_path, "w") as log_file:
        relay = subprocess.Popen([sys.executable, "-m", "shared.cli", "relay", "intake"], cwd=ROOT, env=env,
                                 stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: relay.poll() is not None or rows(
            url, "SELECT count(*) FROM notifications WHERE sent_at IS NOT NULL")[0][0] == 2,
            "both messages to be sent", timeout=60)
        assert relay.poll() is None, log_path.read_text()[-3000:]
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(timeout=10)
    logged = log_path.read_text()
    assert logged.count("notification sent") == 2, logged[-3000:]
    assert "Ms S**" in logged and "Dear A**," in logged and "+1****67" in logged
    for secret in ("Smith", "SMITH", "Anne", "ANNE", "4567", "234 567"):
        assert secret not in logged, secret
