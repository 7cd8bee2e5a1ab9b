"""Prometheus text, the OpenAPI document and the error body."""
import json

import pytest

from services.intake.openapi import DOCUMENT
from shared.web import errors
from shared.observability.metrics import Registry


def test_counters_render_in_prometheus_text_format():
    r = Registry()
    r.inc("closeloop_http_requests_total", "HTTP requests answered", method="POST", path="/v1/sales", status=201)
    r.inc("closeloop_http_requests_total", "HTTP requests answered", status=201, path="/v1/sales", method="POST")
    r.inc("closeloop_http_requests_total", "HTTP requests answered", method="GET", path="/health", status=200)
    r.inc("closeloop_relay_published_total", "events published", value=5)
    text = r.render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines == [
        "# HELP closeloop_http_requests_total HTTP requests answered",
        "# TYPE closeloop_http_requests_total counter",
        'closeloop_http_requests_total{method="GET",path="/health",status="200"} 1.0',
        'closeloop_http_requests_total{method="POST",path="/v1/sales",status="201"} 2.0',
        "# HELP closeloop_relay_published_total events published",
        "# TYPE closeloop_relay_published_total counter",
        "closeloop_relay_published_total 5.0",
    ]


def test_histogram_buckets_are_cumulative():
    r = Registry()
    for seconds in (0.003, 0.2, 0.2, 7.0):
        r.observe("closeloop_http_request_duration_seconds", "HTTP request latency", seconds, path="/v1/sales")
    lines = r.render().splitlines()
    assert lines[:2] == ["# HELP closeloop_http_request_duration_seconds HTTP request latency",
                         "# TYPE closeloop_http_request_duration_seconds histogram"]
    buckets = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in lines if "_bucket{" in line}
    assert buckets["0.005"] == 1 and buckets["0.1"] == 1 and buckets["0.25"] == 3 and buckets["5.0"] == 3
    assert buckets["+Inf"] == 4
    counts = list(buckets.values())
    assert counts == sorted(counts)
    assert 'closeloop_http_request_duration_seconds_count{path="/v1/sales"} 4' in lines
    total = next(l for l in lines if l.startswith("closeloop_http_request_duration_seconds_sum"))
    assert float(total.rsplit(" ", 1)[1]) == pytest.approx(7.403)


def test_gauges_are_appended():
    text = Registry().render([("closeloop_outbox_pending", "events waiting for the relay", 3, {"service": "intake"})])
    assert text.splitlines() == ["# HELP closeloop_outbox_pending events waiting for the relay",
                                 "# TYPE closeloop_outbox_pending gauge",
                                 'closeloop_outbox_pending{service="intake"} 3']


def test_label_values_escape_quotes_and_backslashes():
    r = Registry()
    r.inc("c_total", "c", path='say "hi"\\now')
    assert r.render().splitlines()[2] == 'c_total{path="say \\"hi\\"\\\\now"} 1.0'


def test_label_values_escape_line_feeds():
    # The text format escapes a line feed in a label value as \n; a raw one splits the sample
    # over two lines and the whole scrape fails to parse.
    r = Registry()
    r.inc("c_total", "c", note="two\nlines")
    assert r.render().splitlines()[2:] == ['c_total{note="two\\nlines"} 1.0']


def test_openapi_document_is_json_and_describes_complaint_registration():
    document = json.loads(json.dumps(DOCUMENT))
    assert document["openapi"].startswith("3.")
    post = document["paths"]["/v1/complaints"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"kind", "channel", "customer", "description"} <= set(schema["required"])
    assert {"kind", "channel", "customer", "category", "products"} <= set(schema["properties"])
    assert schema["properties"]["kind"]["enum"] == ["complaint", "suggestion", "praise", "inquiry"]
    assert "online_chat" in schema["properties"]["channel"]["enum"]
    assert set(schema["properties"]["customer"]["properties"]) == {"name", "phone", "email", "language"}
    products = schema["properties"]["products"]["anyOf"][0]
    assert products["type"] == "array" and products["items"]["required"] == ["sku"]
    assert post["security"] == [{"bearer": []}]
    assert {"201", "400", "401"} <= set(post["responses"])
    assert post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "security" not in document["paths"]["/health"]["get"]
    sale = document["paths"]["/v1/sales"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(sale["required"]) == {"customer", "sold_at", "items"}
    assert sale["properties"]["items"]["minItems"] == 1


@pytest.mark.parametrize("error, status, code", [
    (errors.Unauthorized(), 401, "unauthorized"), (errors.NotFound(), 404, "not_found"),
    (errors.Conflict(), 409, "conflict"), (errors.Forbidden(), 403, "forbidden"),
    (errors.ValidationFailed(), 400, "invalid_request"), (errors.PayloadTooLarge(), 413, "payload_too_large"),
    (errors.RuleRefused(), 422, "rule_refused"),
])
def test_error_status_and_code(error, status, code):
    body = error.to_body()
    assert error.status == status and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_error_body_names_fields():
    body = errors.ValidationFailed("the complaint is invalid",
                                   fields={"customer.phone": ["not a phone number"]}).to_body()
    assert body == {"error": {"code": "invalid_request", "message": "the complaint is invalid",
                              "fields": {"customer.phone": ["not a phone number"]}}}
    assert errors.Unauthorized().to_body()["error"]["message"] == "A valid bearer token is required."


def test_remote_errors_map_back_to_local_ones():
    class Remote:
        exc_type, value = "NotFound", "no complaint 1"

    class Unknown:
        exc_type, value = "KeyError", "boom"

    assert isinstance(errors.from_remote(Remote()), errors.NotFound)
    assert errors.from_remote(Remote()).message == "no complaint 1"
    assert errors.from_remote(Unknown()).status == 503


def test_several_series_of_one_gauge_share_one_help_and_type():
    from shared.observability.metrics import Registry

    text = Registry().render([("closeloop_dead_letter_depth", "parked", 2, {"queue": "a.dlq"}),
                              ("closeloop_dead_letter_depth", "parked", 0, {"queue": "b.dlq"})])
    assert text.count("# TYPE closeloop_dead_letter_depth gauge") == 1
    assert 'closeloop_dead_letter_depth{queue="a.dlq"} 2' in text and 'closeloop_dead_letter_depth{queue="b.dlq"} 0' in text


def test_the_list_query_parameters_come_from_the_query_schema():
    from services.intake.openapi import DOCUMENT

    params = {p["name"]: p["schema"] for p in DOCUMENT["paths"]["/v1/complaints"]["get"]["parameters"]}
    assert params["from"] == {"type": "string", "format": "date-time"}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 200}
    assert params["status"]["enum"][0] == "received"
