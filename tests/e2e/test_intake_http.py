"""Intake end to end: HTTP in, events out on the real broker, rows in the real database."""
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from shared.security import auth
from shared.testing.fixtures import jsonbody, wait_until
from shared.testing.samples import COMPLAINT_REQUEST as COMPLAINT
from shared.testing.samples import complaint_request as complaint

pytestmark = pytest.mark.e2e

ENVELOPE_KEYS = {"event_id", "type", "version", "occurred_at", "source", "branch_code", "correlation_id",
                 "causation_id", "sequence", "payload"}


def post(http, intake, path, body, token, **headers):
    headers = {"Authorization": f"Bearer {token}", **headers}
    if isinstance(body, (dict, list)):
        return http.post(intake.url(path), json=body, headers=headers, timeout=10)
    return http.post(intake.url(path), data=body, headers=headers, timeout=10)


def of(complaint_id):
    return lambda m: m["body"]["payload"].get("complaint_id") == complaint_id


def test_a_complaint_posted_over_http_reaches_a_plain_kombu_consumer(http, intake, events, token):
    response = post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="SH001"))

    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["reference"] == "SH001-20261122-0001"
    assert (answer["kind"], answer["status"]) == ("complaint", "received")
    assert (answer["category"], answer["category_source"], answer["priority"]) == ("safety", "automatic", "urgent")
    assert answer["received_at"] == "2026-11-22T02:00:00Z"
    assert answer["first_response_due"] == "2026-11-22T03:00:00Z"  # urgent: 1 hour around the clock
    assert answer["resolution_due"] == "2026-11-29T02:00:00Z"
    assert "SH001-20261122-0001" in answer["acknowledgement"]
    assert answer["customer"] == {"name": "王**", "phone": "138****6138", "email": None, "language": "zh"}
    assert response.headers["Location"] == f"/v1/complaints/{answer['id']}"

    [message] = events.wait_for(of(answer["id"]))
    event = message["body"]
    assert message["routing_key"] == "complaint_registered"
    assert set(event) == ENVELOPE_KEYS
    assert (event["type"], event["version"], event["source"], event["branch_code"]) == \
        ("complaint_registered", 1, "intake", "SH001")
    assert event["correlation_id"] == answer["id"]
    assert event["causation_id"] == response.headers["X-Correlation-Id"]
    uuid.UUID(event["event_id"])
    assert event["occurred_at"] == "2026-11-22T02:00:00Z"
    assert event["sequence"] == 1  # the first event about this complaint
    payload = event["payload"]
    assert payload["reference"] == answer["reference"]
    assert payload["priority"] == "urgent" and payload["category"] == "safety"
    assert payload["service"]["technician_id"] == "T-017"
    assert payload["products"] == [{"sku": "DYE-5N", "name": None, "batch": "B2026-11-03"}]
    assert payload["customer_masked"]["phone"] == "138****6138"
    assert payload["customer_ref"].startswith("c_")
    assert payload["first_response_due"] == "2026-11-22T03:00:00Z"
    raw = json.dumps(event, ensure_ascii=False)
    assert "13812346138" not in raw and "王女士" not in raw  # contact data never leaves intake

    # The acknowledgement also went out through the notification port.
    wait_until(lambda: any(n["subject_id"] == answer["id"] for n in intake.sender.notifier.sent),
               "the acknowledgement to be sent")
    sent = next(n for n in intake.sender.notifier.sent if n["subject_id"] == answer["id"])
    assert (sent["channel"], sent["recipient"], sent["audience"]) == ("sms", "13812346138", "customer")
    # The customer is greeted by name; staff views show the same text with the name masked.
    assert sent["body"] == answer["acknowledgement"].replace("王**", "王女士")
    assert answer["acknowledgement"].startswith("王**")


def test_a_general_complaint_due_while_the_branch_is_closed_moves_to_the_next_opening(http, intake, token):
    intake.clock.set(datetime(2026, 11, 22, 15, 0, tzinfo=timezone.utc))  # 23:00 in Shanghai, closed
    body = complaint(description="前台态度很差", severity_flags=None, service=None, products=[],
                     customer={"name": "Ms Li", "email": "li@example.com", "language": "en"})
    response = post(http, intake, "/v1/complaints", body, token("front_desk", branch="SH001"))

    assert response.status_code == 201, response.text
    answer = response.json()
    assert (answer["category"], answer["priority"]) == ("staff_attitude", "general")
    # 24 h later is 23:00 the next day, closed: moved to 10:00 the day after.
    assert answer["first_response_due"] == "2026-11-24T02:00:00Z"
    assert answer["reference"].startswith("SH001-20261122-")
    assert "SH001-20261122" in answer["acknowledgement"] and answer["acknowledgement"].isascii()


def test_suggestions_are_feedback_with_low_priority(http, intake, events, token):
    body = complaint(kind="suggestion", description="希望增加周末的预约时段", severity_flags=None)
    response = post(http, intake, "/v1/complaints", body, token("front_desk", branch="SH001"))
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["priority"] == "low"
    assert answer["first_response_due"] == "2026-11-25T02:00:00Z"  # 72 hours, inside opening hours
    [message] = events.wait_for(of(answer["id"]))
    assert message["routing_key"] == "feedback_registered"
    assert message["body"]["payload"]["kind"] == "suggestion"


def test_a_retry_with_the_same_idempotency_key_returns_the_first_answer_and_publishes_nothing(
        http, intake, events, token):
    front_desk = token("front_desk", branch="SH001", subject="till-1")
    first = post(http, intake, "/v1/complaints", COMPLAINT, front_desk, **{"Idempotency-Key": "k-1"})
    again = post(http, intake, "/v1/complaints", COMPLAINT, front_desk, **{"Idempotency-Key": "k-1"})
    other = post(http, intake, "/v1/complaints", complaint(description="毛巾很脏"), front_desk,
                 **{"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert other.status_code == 409
    assert other.json()["error"]["fields"] == {"Idempotency-Key": ["already used for a different request"]}
    # A later complaint arriving proves the bus has caught up: still one event for the first.
    marker = post(http, intake, "/v1/complaints", COMPLAINT, front_desk).json()
    events.wait_for(of(marker["id"]))
    assert len([m for m in events.messages if of(first.json()["id"])(m)]) == 1
    assert marker["reference"].endswith("-0002")  # the retry did not use a sequence number


def test_reading_a_complaint_is_scoped_to_the_token(http, intake, token):
    created = post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="SH001")).json()
    url = intake.url(f"/v1/complaints/{created['id']}")

    def get(tok, target=url):
        return http.get(target, headers={"Authorization": f"Bearer {tok}"}, timeout=10)

    same_branch = get(token("store_manager", branch="SH001"))
    assert same_branch.status_code == 200
    assert same_branch.json() == created
    assert get(token("regional_manager", region="east")).status_code == 200
    assert get(token("hq_admin", branch="*")).status_code == 200
    assert get(token("front_desk", branch="SH002")).status_code == 404
    assert get(token("regional_manager", region="north")).status_code == 404
    assert get(token("auditor", branch="*")).status_code == 403  # in scope, but not this role's to read
    assert get(token("auditor", branch="SH002")).status_code == 404  # 404 comes before 403
    assert get(token("front_desk", branch="SH001"), intake.url(f"/v1/complaints/{uuid.uuid4()}")).status_code == 404
    missing = get(token("front_desk", branch="SH001"), intake.url("/v1/complaints/not-a-uuid"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_list_filters_pages_and_stays_in_scope(http, intake, token):
    sh001, sh002 = token("front_desk", branch="SH001"), token("front_desk", branch="SH002")
    ids = []
    for minute in range(5):
        intake.clock.advance(minutes=1)
        ids.append(post(http, intake, "/v1/complaints", complaint(description=f"前台态度很差 {minute}"), sh001).json()["id"])
    other = post(http, intake, "/v1/complaints", COMPLAINT, sh002).json()["id"]

    def page(tok, **params):
        response = http.get(intake.url("/v1/complaints"), params=params,
                            headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    seen, cursor = [], None
    while True:
        result = page(sh001, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in result["items"]]
        cursor = result["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, every one once, none of SH002
    east = page(token("regional_manager", region="east"), limit=200)
    assert {item["id"] for item in east["items"]} == set(ids) | {other}
    only_sh002 = page(token("hq_admin", branch="*"), branch="SH002", limit=200)
    assert [item["id"] for item in only_sh002["items"]] == [other]
    window = page(sh001, **{"from": "2026-11-22T02:02:00Z", "to": "2026-11-22T02:04:00Z"})
    assert [item["id"] for item in window["items"]] == [ids[2], ids[1]]
    assert page(sh001, status="closed")["items"] == []

    bad = http.get(intake.url("/v1/complaints"), params={"limit": 0, "from": "yesterday", "cursor": "zz", "colour": "red"},
                   headers={"Authorization": f"Bearer {sh001}"}, timeout=10)
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) >= {"limit", "from", "colour"}
    nul = http.get(intake.url("/v1/complaints"), params={"category": "safety\x00"},
                   headers={"Authorization": f"Bearer {sh001}"}, timeout=10)
    assert nul.status_code == 400 and set(nul.json()["error"]["fields"]) == {"category"}


BAD_BODIES = [
    ({k: v for k, v in COMPLAINT.items() if k not in ("kind", "description")}, {"kind", "description"}),
    (complaint(channel="fax", kind="moan"), {"channel", "kind"}),
    (complaint(customer={"name": "王女士", "phone": "12345"}), {"customer.phone"}),
    (complaint(customer={"name": "王女士"}), {"customer.phone"}),
    (complaint(occurred_at="2026-11-25T10:00:00+08:00"), {"occurred_at"}),
    (complaint(occurred_at="yesterday"), {"occurred_at"}),
    (complaint(category="weather", severity_flags=["sunburn"]), {"category", "severity_flags"}),
    (complaint(products=[{"batch": "B1"}], colour="red"), {"products.0.sku", "colour"}),
    (complaint(description=""), {"description"}),
    (complaint(branch_code="XX999"), {"branch_code"}),
]


@pytest.mark.parametrize("body, wrong", BAD_BODIES)
def test_every_wrong_field_is_named_and_nothing_is_published(http, intake, events, token, body, wrong):
    response = post(http, intake, "/v1/complaints", body, token("front_desk", branch="SH001"))
    assert response.status_code == 400, response.text
    error = jsonbody(response)["error"]
    assert error["code"] == "invalid_request"
    assert set(error["fields"]) == wrong
    assert_nothing_stored(intake)


def assert_nothing_stored(intake):
    engine = sa.create_engine(intake.database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM complaints")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("data, content_type, status, code", [
    ("{not json", "application/json", 400, "malformed_json"),
    ("[1, 2]", "application/json", 400, "invalid_request"),
    ("\xff\xfe", "application/json", 400, "malformed_json"),
    ("kind=complaint", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("{}", None, 415, "unsupported_media_type"),
    ('{"description": "' + "长" * 400_000 + '"}', "application/json", 413, "payload_too_large"),
])
def test_bodies_that_are_not_a_json_object_are_refused_in_the_error_shape(
        http, intake, token, data, content_type, status, code):
    headers = {"Content-Type": content_type} if content_type else {}
    response = post(http, intake, "/v1/complaints", data.encode("utf-8", "surrogateescape")
                    if isinstance(data, str) else data, token("front_desk", branch="SH001"), **headers)
    assert response.status_code == status, response.text
    assert jsonbody(response)["error"]["code"] == code
    assert_nothing_stored(intake)


def test_tokens_and_roles_are_checked_before_anything_is_stored(http, intake, token, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forged_key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cases = [
        (None, 401), ("garbage", 401),
        (auth.issue_token(role="front_desk", subject="x", branch="SH001",
                          now=datetime.now(timezone.utc) - timedelta(days=2), ttl=timedelta(days=1)), 401),
        (auth.issue_token(role="front_desk", subject="x", branch="SH001", private_key=forged_key), 401),
        (token("hq_analyst", branch="*"), 403),
        (token("auditor", branch="SH001"), 403),
        (token("front_desk", branch="SH001"), 201),
    ]
    for tok, status in cases:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        response = http.post(intake.url("/v1/complaints"), json=complaint(description=f"x {status}"),
                             headers=headers, timeout=10)
        assert response.status_code == status, (tok, response.text)
        if status != 201:
            assert jsonbody(response)["error"]["code"] in ("unauthorized", "forbidden")
    # Posting for a branch outside the token's scope is refused; a multi-branch token must name one.
    assert post(http, intake, "/v1/complaints", complaint(branch_code="SH002"),
                token("front_desk", branch="SH001")).status_code == 403
    many = post(http, intake, "/v1/complaints", COMPLAINT, token("aftercare_agent", region="east"))
    assert many.status_code == 400 and set(many.json()["error"]["fields"]) == {"branch_code"}
    chosen = post(http, intake, "/v1/complaints", complaint(branch_code="SH002"), token("aftercare_agent", region="east"))
    assert chosen.status_code == 201 and chosen.json()["reference"].startswith("SH002-")


def test_unknown_paths_and_methods_answer_in_the_error_shape(http, intake):
    missing = http.get(intake.url("/v1/nothing"), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = http.delete(intake.url("/v1/complaints"), timeout=10)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_a_sale_is_recorded_and_published_without_the_contact(http, intake, events, token):
    sale = {"customer": {"name": "李女士", "phone": "139 0000 1111", "contact_consent": True},
            "sold_at": "2026-11-22T09:30:00+08:00",
            "items": [{"type": "product", "sku": "SK-01", "name": "精华液", "product_type": "skincare", "batch": "B7"},
                      {"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour", "technician_id": "T-017"}]}
    response = post(http, intake, "/v1/sales", sale, token("front_desk", branch="SH001"))
    assert response.status_code == 201, response.text
    answer = response.json()
    assert "Location" not in response.headers  # no endpoint serves a single sale
    assert answer["contact_consent"] is True and answer["customer"]["phone"] == "139****1111"
    [message] = events.wait_for(lambda m: m["body"]["payload"].get("sale_id") == answer["id"])
    payload = message["body"]["payload"]
    assert message["routing_key"] == "sale_recorded"
    assert payload["contact_consent"] is True
    assert [i["product_type"] for i in payload["items"]] == ["skincare", "hair_colour"]
    assert payload["items"][1]["technician_id"] == "T-017"
    assert "13900001111" not in json.dumps(message["body"])

    bad = dict(sale, items=[{"type": "product", "product_type": "potion"}], sold_at="2030-01-01T00:00:00Z")
    refused = post(http, intake, "/v1/sales", bad, token("front_desk", branch="SH001"))
    assert refused.status_code == 400
    assert set(refused.json()["error"]["fields"]) == {"items.0.sku", "items.0.product_type", "sold_at"}
    assert post(http, intake, "/v1/sales", sale, token("hq_analyst", branch="*")).status_code == 403


def contact_grant(token, role, branch, record_id, purpose, subject=None):
    """What investigation or aftercare sends for its user: a grant, never the user's token."""
    from shared.runtime.provider import verifier

    user = verifier(None).identity(token(role, branch=branch, subject=subject))
    return auth.issue_grant(user, call="intake.get_contact", record_id=record_id, purpose=purpose)


def test_the_contact_read_rpc_checks_scope_and_role_and_logs_each_read(http, intake, token, amqp_uri):
    from nameko.exceptions import RemoteError
    from nameko.standalone.rpc import ClusterRpcProxy

    created = post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="SH001")).json()
    record = created["id"]
    why = "calling back about the allergy"
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=10) as rpc:
        grant = contact_grant(token, "store_manager", "SH001", record, why, subject="mgr-7")
        contact = rpc.intake.get_contact(grant, record, why)
        assert (contact["name"], contact["phone"], contact["record_type"]) == ("王女士", "13812346138", "complaint")
        refusals = {}
        for label, grant, purpose in [
                ("other branch", contact_grant(token, "store_manager", "SH002", record, "x y", "mgr-9"), "x y"),
                ("no purpose", contact_grant(token, "store_manager", "SH001", record, "\u200b", "mgr-7"), "\u200b"),
                ("analyst", contact_grant(token, "hq_analyst", "*", record, "x y", "an-1"), "x y"),
                ("bad grant", "nonsense", "x y"),
                ("user token", token("store_manager", branch="SH001"), why),
                ("another purpose", contact_grant(token, "store_manager", "SH001", record, why), "something else")]:
            with pytest.raises(RemoteError) as raised:
                rpc.intake.get_contact(grant, record, purpose)
            refusals[label] = raised.value.exc_type
    assert refusals == {"other branch": "NotFound", "no purpose": "ValidationFailed", "analyst": "Forbidden",
                        "bad grant": "Unauthorized", "user token": "Unauthorized", "another purpose": "Unauthorized"}
    engine = sa.create_engine(intake.database_url)
    with engine.connect() as conn:
        log = conn.execute(sa.text("SELECT subject, role, record_id, branch_code, purpose, outcome, reason "
                                   "FROM contact_access_log ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in log] == [
        ("mgr-7", "store_manager", record, "SH001", why, "granted", None),
        ("mgr-9", "store_manager", record, "SH001", "x y", "refused", "out_of_scope"),
        ("mgr-7", "store_manager", record, "SH001", "\u200b", "refused", "purpose"),
        ("an-1", "hq_analyst", record, "SH001", "x y", "refused", "role")]


def test_health_metrics_and_openapi_are_public(http, intake, token):
    post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="SH001"))
    health = http.get(intake.url("/health"), timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["broker"]["status"] == "ok"
    assert set(body["outbox"]) == {"pending", "oldest_age_seconds", "notifications_pending", "notifications_failed"}

    metrics = http.get(intake.url("/metrics"), timeout=10)
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    assert 'closeloop_http_requests_total{method="POST",path="/v1/complaints",status="201"}' in metrics.text
    # state every replica shares is published apart, so a dashboard summing replicas counts it once
    assert "closeloop_outbox" not in metrics.text
    shared = http.get(intake.url("/metrics/shared"), timeout=10)
    assert shared.status_code == 200 and shared.headers["Content-Type"].startswith("text/plain")
    assert 'closeloop_outbox_pending{service="intake"}' in shared.text
    assert "closeloop_outbox_lag_seconds" in shared.text and "closeloop_http_requests_total" not in shared.text

    spec = http.get(intake.url("/openapi.json"), timeout=10).json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/complaints", "/v1/complaints/{complaint_id}", "/v1/sales", "/health", "/health/ready",
            "/metrics/shared"} <= set(spec["paths"])
