"""Pure parsing at the edges: dates Python cannot move, bodies nested too deep."""
import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from services.intake import handlers
from shared.web.requests import decode_cursor
from services.intake.schemas import ComplaintQuery, SaleIn
from shared.persistence import idempotency
from shared.web import fields
from shared.web.errors import ValidationFailed
from shared.web.http import MAX_DEPTH, _paths_with_bad_text

EDGES = ["9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "0099-12-31T23:59:59Z"]


@pytest.mark.parametrize("edge", EDGES)
def test_a_date_whose_utc_or_arithmetic_overflows_is_named(edge):
    with pytest.raises(ValidationError) as refused:
        ComplaintQuery().load({"from": edge, "to": edge})
    assert set(refused.value.messages) == {"from", "to"}
    with pytest.raises(ValidationError) as refused:
        SaleIn().load({"sold_at": edge})
    assert refused.value.messages["sold_at"] == [fields.RANGE_MESSAGE]


ODD_OFFSETS = ["2026-11-20T10:00:00+16:00", "2026-11-20T10:00:00-23:59", "2026-11-20T10:00:00+08:00:00.5"]


@pytest.mark.parametrize("odd", ODD_OFFSETS)
def test_an_offset_postgresql_cannot_take_is_named_before_any_database_work(odd):
    with pytest.raises(ValidationError) as refused:
        SaleIn().load({"sold_at": odd})
    assert refused.value.messages["sold_at"] == [fields.OFFSET_MESSAGE]
    with pytest.raises(ValidationError) as refused:
        ComplaintQuery().load({"from": odd})
    assert refused.value.messages["from"] == [fields.OFFSET_MESSAGE]
    raw = json.dumps([odd, "6f1c1c2e-3d4b-4b8e-9a47-0d2f3c4b5a69"]).encode()
    with pytest.raises(ValidationFailed) as refused:
        decode_cursor(base64.urlsafe_b64encode(raw).decode())
    assert set(refused.value.fields) == {"cursor"}


@pytest.mark.parametrize("real", ["2026-11-20T10:00:00+14:00", "2026-11-20T10:00:00-12:00",
                                  "2026-11-20T10:00:00+05:45", "2026-11-20T10:00:00+15:59"])
def test_every_real_offset_is_taken(real):
    assert ComplaintQuery().load({"from": real})["from_"].isoformat() == real


def test_every_accepted_date_survives_utc_conversion_and_decades_of_arithmetic():
    for edge in (fields.EARLIEST, fields.LATEST):
        for zone in (timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))):
            value = edge.astimezone(zone)
            assert fields.in_range(value)
            value.astimezone(timezone.utc) + timedelta(days=3650)
            value.astimezone(timezone.utc) - timedelta(days=3650)


def test_a_cursor_at_the_edge_is_an_invalid_cursor():
    raw = json.dumps(["9999-12-31T23:59:59-14:00", "6f1c1c2e-3d4b-4b8e-9a47-0d2f3c4b5a69"]).encode()
    with pytest.raises(ValidationFailed) as refused:
        decode_cursor(base64.urlsafe_b64encode(raw).decode())
    assert set(refused.value.fields) == {"cursor"}


def test_the_plausibility_check_names_a_date_it_cannot_convert():
    errors = {}
    edge = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    handlers._plausible(edge, datetime.now(timezone.utc), "occurred_at", errors)
    assert errors == {"occurred_at": [fields.RANGE_MESSAGE]}


def nested(levels: int):
    node: list = []
    for _ in range(levels - 2):
        node = [node]
    return {"products": node}  # the object itself is one level


def test_nesting_up_to_the_limit_is_walked_and_deeper_is_refused_by_path():
    assert _paths_with_bad_text(nested(MAX_DEPTH)) == {}
    with pytest.raises(ValidationFailed) as refused:
        _paths_with_bad_text(nested(MAX_DEPTH + 1))
    [path] = refused.value.fields
    assert path.startswith("products.0") and "nested" in refused.value.message


def test_the_request_hash_refuses_what_it_cannot_walk():
    with pytest.raises(ValidationFailed):
        idempotency.request_hash("POST", "/v1/complaints", nested(100_000))
