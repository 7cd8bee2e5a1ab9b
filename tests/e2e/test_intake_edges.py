"""Edge cases a review found: each once gave a 500, lost data, or leaked what it should not."""
import json
import uuid

import pytest

from shared.security import auth
from tests.e2e.test_intake_http import COMPLAINT, complaint, post

pytestmark = pytest.mark.e2e


def headers(token, **extra):
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


def test_the_same_idempotency_key_from_two_branches_is_two_complaints(http, intake, token):
    sh001 = post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="SH001", subject="till"),
                 **{"Idempotency-Key": "k-42"})
    bj001 = post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="BJ001", subject="till"),
                 **{"Idempotency-Key": "k-42"})
    assert sh001.status_code == bj001.status_code == 201
    assert bj001.json()["reference"].startswith("BJ001-") and bj001.json()["id"] != sh001.json()["id"]


@pytest.mark.parametrize("raw, field", [
    ('"description": "\\ud800 broken"', "description"),
    ('"severity_flags": ["\\udfff"]', "severity_flags.0"),
    ('"\\ud800": 1', None),
])
def test_lone_surrogate_escapes_are_refused_by_name(http, intake, token, raw, field):
    body = json.dumps(complaint())[:-1] + ", " + raw + "}"
    response = http.post(intake.url("/v1/complaints"), data=body.encode(),
                         headers=headers(token("front_desk", branch="SH001")), timeout=10)
    assert response.status_code == 400, response.text
    fields = response.json()["error"]["fields"]
    assert field in fields if field else len(fields) == 1


def test_a_body_in_another_charset_is_refused(http, intake, token):
    response = http.post(intake.url("/v1/complaints"), data=json.dumps(COMPLAINT).encode(),
                         headers=headers(token("front_desk", branch="SH001"),
                                         **{"Content-Type": "application/json; charset=latin-1"}), timeout=10)
    assert response.status_code == 415


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+08:00", "1990-05-01T10:00:00+08:00"])
def test_implausibly_old_dates_are_refused(http, intake, token, occurred_at):
    response = post(http, intake, "/v1/complaints", complaint(occurred_at=occurred_at),
                    token("front_desk", branch="SH001"))
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == {"occurred_at"}


def test_a_chunked_body_is_read(http, intake, token):
    data = json.dumps(COMPLAINT).encode()
    response = http.post(intake.url("/v1/complaints"), data=iter([data[:50], data[50:]]),
                         headers=headers(token("front_desk", branch="SH001")), timeout=10)
    assert response.status_code == 201, response.text


def test_odd_headers_and_paths(http, intake, token):
    front_desk = token("front_desk", branch="SH001")
    bad_key = post(http, intake, "/v1/complaints", COMPLAINT, front_desk, **{"Idempotency-Key": "a b"})
    assert bad_key.status_code == 400 and set(bad_key.json()["error"]["fields"]) == {"Idempotency-Key"}
    created = post(http, intake, "/v1/complaints", COMPLAINT, front_desk, **{"X-Correlation-Id": "<script>"})
    assert created.status_code == 201
    uuid.UUID(created.headers["X-Correlation-Id"])  # not echoed: a new one
    urn = http.get(intake.url(f"/v1/complaints/urn:uuid:{created.json()['id'].upper()}"),
                   headers={"Authorization": f"Bearer {front_desk}"}, timeout=10)
    assert urn.status_code == 200 and urn.json()["id"] == created.json()["id"]
    nested = "W" * 10 + "=="
    import base64
    deep = base64.urlsafe_b64encode(b"[" * 150).decode()
    for cursor in (nested, deep):
        listing = http.get(intake.url("/v1/complaints"), params={"cursor": cursor},
                           headers={"Authorization": f"Bearer {front_desk}"}, timeout=10)
        assert listing.status_code == 400 and set(listing.json()["error"]["fields"]) == {"cursor"}


def test_a_token_for_a_branch_outside_the_policy_is_refused(http, intake):
    stray = auth.issue_token(role="front_desk", subject="x", branch="SH999")
    assert post(http, intake, "/v1/complaints", COMPLAINT, stray).status_code == 401


def test_staff_never_see_the_name_however_it_is_spaced(http, intake, token):
    body = complaint(customer={"name": " 王女士 ", "phone": "13812346138"})
    answer = post(http, intake, "/v1/complaints", body, token("front_desk", branch="SH001")).json()
    assert "王女士" not in json.dumps(answer, ensure_ascii=False)
    assert answer["customer"]["name"] == "王**" and answer["acknowledgement"].startswith("王**")


def test_the_contact_rpc_refuses_arguments_of_the_wrong_type(http, intake, token, amqp_uri):
    from nameko.exceptions import RemoteError
    from nameko.standalone.rpc import ClusterRpcProxy

    from tests.e2e.test_intake_http import contact_grant

    created = post(http, intake, "/v1/complaints", COMPLAINT, token("front_desk", branch="SH001")).json()

    def grant(record_id, purpose):  # even a grant made for odd values meets the handler's checks
        return contact_grant(token, "store_manager", "SH001", record_id, purpose)

    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=10) as rpc:
        refusals = {}
        for label, args in [("dict token", ({"a": 1}, created["id"], "x")),
                            ("list id", (grant([created["id"]], "call back"), [created["id"]], "call back")),
                            ("dict purpose", (grant(created["id"], {"why": "x"}), created["id"], {"why": "x"})),
                            ("nul purpose", (grant(created["id"], "call\x00back"), created["id"], "call\x00back"))]:
            with pytest.raises(RemoteError) as raised:
                rpc.intake.get_contact(*args)
            refusals[label] = raised.value.exc_type
    assert refusals == {"dict token": "Unauthorized", "list id": "NotFound", "dict purpose": "ValidationFailed",
                        "nul purpose": "ValidationFailed"}


def test_a_reused_key_is_409_even_when_the_new_body_is_invalid_or_out_of_scope(http, intake, token):
    front_desk = token("front_desk", branch="SH001")
    assert post(http, intake, "/v1/complaints", COMPLAINT, front_desk, **{"Idempotency-Key": "k-7"}).status_code == 201
    for body in (complaint(kind="moan"), complaint(branch_code="SH002")):
        again = post(http, intake, "/v1/complaints", body, front_desk, **{"Idempotency-Key": "k-7"})
        assert again.status_code == 409, again.text
