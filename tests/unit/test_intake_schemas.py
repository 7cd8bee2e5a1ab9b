"""Intake's request validation: every wrong field is named by its path."""
import pytest
from marshmallow import ValidationError

from services.intake.schemas import ComplaintIn, ComplaintQuery, SaleIn, flatten_errors
from shared.testing.samples import COMPLAINT_REQUEST

COMPLAINT = COMPLAINT_REQUEST
SALE = {"customer": {"name": "李先生", "phone": "13900001111", "contact_consent": True},
        "sold_at": "2026-11-22T20:30:00+08:00",
        "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare", "batch": "B7"},
                  {"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour", "technician_id": "T-017"}]}


def errors(schema, body) -> dict:
    with pytest.raises(ValidationError) as raised:
        schema.load(body)
    return flatten_errors(raised.value.messages)


def test_the_design_example_is_valid():
    data = ComplaintIn().load(COMPLAINT)
    assert data["customer"]["phone"] == "13812346138" and data["occurred_at"].utcoffset() is not None
    assert data["products"][0] == {"sku": "DYE-5N", "batch": "B2026-11-03", "name": None}


def test_optional_parts_may_be_absent_or_null():
    minimal = {"kind": "praise", "channel": "wechat", "customer": {"email": "anne@example.com"},
               "description": "Great colour!"}
    data = ComplaintIn().load(minimal)
    assert data["customer"]["language"] == "zh"
    assert data["category"] is None and data["service"] is None and data["products"] is None
    ComplaintIn().load({**COMPLAINT, "service": None, "products": [], "severity_flags": None})


def test_every_wrong_field_is_named_with_its_path():
    body = {"kind": "grumble", "channel": "fax", "colour": "pink",
            "customer": {"phone": "12345", "nickname": "W"},
            "description": "", "occurred_at": "2026-11-21T15:00:00",
            "service": {"name": "染发"},
            "products": [{"sku": "OK-1"}, {"batch": "B1", "expiry": "2027"}]}
    found = errors(ComplaintIn(), body)
    assert set(found) == {"kind", "channel", "colour", "customer.phone", "customer.nickname", "description",
                          "occurred_at", "service.code", "products.1.sku", "products.1.expiry"}
    assert found["colour"] == ["Unknown field."] and found["customer.nickname"] == ["Unknown field."]
    assert "not a phone number" in found["customer.phone"][0]
    assert found["occurred_at"] == ["Not a valid aware datetime."]


def test_missing_required_fields_are_named():
    found = errors(ComplaintIn(), {})
    assert set(found) == {"kind", "channel", "customer", "description"}
    assert all(m == ["Missing data for required field."] for m in found.values())


@pytest.mark.parametrize("customer, path, words", [
    ({"name": "王女士"}, "customer.phone", "give a phone or an email"),
    ({"email": "not-an-email"}, "customer.email", "not an email address"),
    ({"phone": "13812346138", "language": "fr"}, "customer.language", "Must be one of"),
    ("王女士 13812346138", "customer", "Invalid input type"),
])
def test_customer_problems(customer, path, words):
    found = errors(ComplaintIn(), {**COMPLAINT, "customer": customer})
    assert list(found) == [path] and words in found[path][0]


def test_sale_is_valid_and_its_problems_are_named():
    assert SaleIn().load(SALE)["customer"]["contact_consent"] is True
    body = {"customer": {"phone": "abc"}, "extra": 1,
            "items": [{"type": "product", "product_type": "skincare"},
                      {"type": "service", "product_type": "hair_colour"},
                      {"type": "gift", "sku": "G"}]}
    found = errors(SaleIn(), body)
    assert set(found) == {"extra", "customer.phone", "customer.contact_consent", "sold_at", "items.0.sku",
                          "items.1.code", "items.2.type", "items.2.product_type"}
    assert found["items.0.sku"] == ["a product needs its sku"]
    assert found["items.1.code"] == ["a service needs its code"]
    assert errors(SaleIn(), {**SALE, "items": []}) == {"items": ["Length must be between 1 and 100."]}


def test_query_limits():
    assert ComplaintQuery().load({})["limit"] == 50
    assert ComplaintQuery().load({"from": "2026-11-01T00:00:00Z"})["from_"].year == 2026
    assert set(errors(ComplaintQuery(), {"limit": "500", "status": "lost", "sort": "x"})) == {
        "limit", "status", "sort"}


def test_flatten_errors():
    messages = {"customer": {"_schema": ["bad customer"], "phone": ["bad phone"]},
                "products": {0: {"sku": ["missing"]}, 3: {"_schema": ["bad product"]}},
                "_schema": ["bad body"], "weird": {"x": 5}}
    assert flatten_errors(messages) == {
        "customer": ["bad customer"], "customer.phone": ["bad phone"], "products.0.sku": ["missing"],
        "products.3": ["bad product"], "_schema": ["bad body"], "weird.x": ["5"]}
    assert flatten_errors(["bad"]) == {"_body": ["bad"]}


@pytest.mark.parametrize("name", ["王女士", "玛丽·居里", "José Núñez-García", "O'Brien", "Dr. A. Smith", "Zoë",
                                  "山田 太郎", "Ngọc Ánh", "J.R.R. Tolkien", "St. John"])
def test_names_are_letters_of_any_script_with_a_few_marks(name):
    assert ComplaintIn().load({**COMPLAINT, "customer": {**COMPLAINT["customer"], "name": name}})


@pytest.mark.parametrize("name", ["【中奖通知】请点击", "http://x.cn/a", "王女士 4001234567", "win$$$", "王<b>", "###",
                                  "...", "a_b", "王女士，回复TD退订", "www.evil.cn", "Visit evil.cn", "t.cn"])
def test_a_name_with_digits_links_or_brackets_is_refused(name):
    found = errors(ComplaintIn(), {**COMPLAINT, "customer": {**COMPLAINT["customer"], "name": name}})
    assert list(found) == ["customer.name"]


def test_invisible_characters_are_stripped_and_bidi_controls_refused_in_every_text_field():
    body = {**COMPLAINT, "description": "\u200b\u200b\u200b",
            "customer": {**COMPLAINT["customer"], "name": "\u202e士女王"},
            "service": {"code": "HAIR\u2066-DYE"}, "products": [{"sku": "\u2060"}]}
    found = errors(ComplaintIn(), body)
    assert found["description"] == ["required (nothing visible is left once invisible characters are removed)"]
    assert "U+202E" in found["customer.name"][0] and "U+2066" in found["service.code"][0]
    assert found["products.0.sku"][0].startswith("required")
    data = ComplaintIn().load({**COMPLAINT, "description": "头皮\u200b过敏\ufeff"})
    assert data["description"] == "头皮过敏"
    sale = errors(SaleIn(), {**SALE, "items": [{**SALE["items"][0], "batch": "B\u202d7"}]})
    assert list(sale) == ["items.0.batch"]


def test_a_huge_text_is_refused_before_it_is_scanned():
    found = errors(ComplaintIn(), {**COMPLAINT, "description": "头\u200b" * 300_000})
    assert found == {"description": ["longer than 5000 characters"]}
