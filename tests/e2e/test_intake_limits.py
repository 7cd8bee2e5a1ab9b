"""Values at the edge of Python's range, and bodies nested deeper than any real request:
each once gave a 500 (OverflowError, RecursionError) or an ERROR traceback."""
import base64
import json
import logging

import pytest

from tests.e2e.test_intake_fuzz import SALE
from tests.e2e.test_intake_http import COMPLAINT, complaint, post

pytestmark = pytest.mark.e2e

EDGES = ["9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+14:00"]


def refused_by_name(response, *names):
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]["fields"]) == set(names), response.text


@pytest.mark.parametrize("edge", EDGES)
def test_a_date_at_the_edge_of_the_calendar_is_a_400_naming_it(http, intake, token, edge):
    fd = token("front_desk", branch="SH001")
    refused_by_name(post(http, intake, "/v1/complaints", complaint(occurred_at=edge), fd), "occurred_at")
    refused_by_name(post(http, intake, "/v1/sales", {**SALE, "sold_at": edge}, fd), "sold_at")


@pytest.mark.parametrize("depth", [33, 960, 5000])
def test_a_body_nested_deeper_than_32_levels_is_a_400(http, intake, token, depth):
    nested = "[" * (depth - 1) + "]" * (depth - 1)
    body = json.dumps(COMPLAINT)[:-1] + f', "products": {nested}}}'
    response = post(http, intake, "/v1/complaints", body.encode(), token("front_desk", branch="SH001"),
                    **{"Content-Type": "application/json", "Idempotency-Key": f"deep-{depth}"})
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["error"]["message"]


def test_a_body_nested_32_levels_is_judged_by_its_fields(http, intake, token):
    nested = "[" * 31 + "]" * 31  # the body object and 31 lists: 32 levels
    body = json.dumps(COMPLAINT)[:-1] + f', "products": {nested}}}'
    response = post(http, intake, "/v1/complaints", body.encode(), token("front_desk", branch="SH001"),
                    **{"Content-Type": "application/json", "Idempotency-Key": "deep-32"})
    refused_by_name(response, "products.0")


def cursor_at(instant: str) -> str:
    raw = json.dumps([instant, "6f1c1c2e-3d4b-4b8e-9a47-0d2f3c4b5a69"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("param, value", [
    *[(name, edge) for name in ("from", "to") for edge in EDGES],
    *[("cursor", cursor_at(edge)) for edge in EDGES],
    ("limit", "9" * 5000), ("limit", "-1"), ("limit", "1e3"), ("status", "x" * 2000), ("branch", "SH\x00"),
])
def test_every_query_parameter_at_its_edge_is_a_400_naming_it_without_a_traceback(
        http, intake, token, caplog, param, value):
    caplog.set_level(logging.WARNING)
    response = http.get(intake.url("/v1/complaints"), params={param: value}, timeout=10,
                        headers={"Authorization": f"Bearer {token('hq_analyst')}"})
    refused_by_name(response, param)
    # a client's mistake, not a fault: nothing at ERROR (it was "cannot be stored" with a traceback)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
