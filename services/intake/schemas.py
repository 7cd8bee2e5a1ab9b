"""Intake's request and response shapes (marshmallow). Requests reject unknown fields so
a typo is named instead of silently ignored."""
import re
import unicodedata

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from services.intake.domain import STATUSES
from services.intake.policy import CHANNELS
from shared.messaging.catalogue.intake import KINDS
from shared.security.privacy import is_email, normalize_phone
from shared.web.requests import PageQuery, Strict, Text, flatten_errors  # noqa: F401 (flatten_errors: tests)
from shared.web.fields import AwareDateTime

LANGUAGES = ("zh", "en")


# Besides letters and combining marks (any script), what names are written with: spaces, the
# middle dots of transliterated names (玛丽·居里), initials' dots, apostrophes and hyphens.
NAME_MARKS = frozenset(" ·・.'’-")


# "evil.cn", "www.x.com", "t.cn": a dot followed by a run of letters is a domain, not initials
# ("J.R. Smith": one letter after each dot) or an abbreviation ("St. John": a space after it).
_ADDRESS_LIKE = re.compile(r"\.[^\W\d_]{2,}")


def person_name(value: str) -> None:
    """A person's name, nothing else: no digits, links or brackets (【】), which would turn the
    acknowledgement SMS that greets the customer by name into the poster's own message."""
    odd = sorted({c for c in value if c not in NAME_MARKS and unicodedata.category(c)[0] not in "LM"})
    if odd:
        shown = " ".join(odd[:10])
        raise ValidationError(f"a name is letters, spaces and · . ' - only; not: {shown}")
    if not any(unicodedata.category(c)[0] == "L" for c in value):
        raise ValidationError("a name needs at least one letter")
    if _ADDRESS_LIKE.search(value):
        raise ValidationError("a name must not look like a web address (a dot directly followed by two or more "
                              "letters); initials are fine: J.R. Smith, St. John")


NOT_A_PHONE = ("not a phone number (a Chinese mobile such as 13812346138, a landline such as 021-12345678, "
               "or +<country><number>)")


class CustomerIn(Strict):
    name = Text(100, person_name, load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True)
    email = Text(254, load_default=None, allow_none=True)
    language = fields.String(load_default="zh", validate=validate.OneOf(LANGUAGES))

    @validates("phone")
    def _phone(self, value, **kwargs):
        if value is not None and normalize_phone(value) is None:
            raise ValidationError(NOT_A_PHONE)

    @validates("email")
    def _email(self, value, **kwargs):
        if value is not None and not is_email(value):
            raise ValidationError("not an email address")

    @validates_schema
    def _reachable(self, data, **kwargs):
        if not data.get("phone") and not data.get("email"):
            raise ValidationError("give a phone or an email so the customer can be answered", "phone")


class SaleCustomerIn(CustomerIn):
    contact_consent = fields.Boolean(required=True)


class ServiceIn(Strict):
    code = Text(50, required=True)
    name = Text(100, load_default=None, allow_none=True)
    technician_id = Text(50, load_default=None, allow_none=True)


class ProductIn(Strict):
    sku = Text(50, required=True)
    name = Text(100, load_default=None, allow_none=True)
    batch = Text(50, load_default=None, allow_none=True)


class ComplaintIn(Strict):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    branch_code = Text(20, load_default=None, allow_none=True,
                       metadata={"description": "needed when the token's scope has several branches"})
    customer = fields.Nested(CustomerIn, required=True)
    description = Text(5000, required=True)
    occurred_at = AwareDateTime(load_default=None, allow_none=True)
    category = fields.String(load_default=None, allow_none=True,
                             metadata={"description": "one of the policy's categories; null to classify"})
    severity_flags = fields.List(fields.String(), load_default=None, allow_none=True)
    service = fields.Nested(ServiceIn, load_default=None, allow_none=True)
    products = fields.List(fields.Nested(ProductIn), load_default=None, allow_none=True,
                           validate=validate.Length(max=50))


class ConvertIn(Strict):
    """An inquiry that proves to be a complaint: triaged again as one."""
    category = fields.String(load_default=None, allow_none=True, metadata={
        "description": "one of the policy's categories; null: the inquiry's own if staff chose it, else "
                       "classified from the description"})
    severity_flags = fields.List(fields.String(), load_default=None, allow_none=True, metadata={
        "description": "null: the inquiry's"})
    note = Text(2000, load_default=None, allow_none=True, metadata={"description": "why it is a complaint"})


class SaleItemIn(Strict):
    type = fields.String(required=True, validate=validate.OneOf(("product", "service")))
    sku = Text(50, load_default=None, allow_none=True)
    code = Text(50, load_default=None, allow_none=True)
    name = Text(100, load_default=None, allow_none=True)
    product_type = fields.String(required=True)
    batch = Text(50, load_default=None, allow_none=True)
    technician_id = Text(50, load_default=None, allow_none=True)

    @validates_schema
    def _identified(self, data, **kwargs):
        if data.get("type") == "product" and not data.get("sku"):
            raise ValidationError("a product needs its sku", "sku")
        if data.get("type") == "service" and not data.get("code"):
            raise ValidationError("a service needs its code", "code")


class SaleIn(Strict):
    branch_code = Text(20, load_default=None, allow_none=True)
    customer = fields.Nested(SaleCustomerIn, required=True)
    sold_at = AwareDateTime(required=True)
    items = fields.List(fields.Nested(SaleItemIn), required=True, validate=validate.Length(min=1, max=100))


class ComplaintQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATUSES))
    kind = fields.String(validate=validate.OneOf(KINDS))
    priority = fields.String(validate=validate.OneOf(("urgent", "general", "low")))
    category = fields.String()
    branch = fields.String(data_key="branch")
    from_ = AwareDateTime(data_key="from")
    to = AwareDateTime()


class CustomerLookupIn(Strict):
    """A front desk finds a customer by phone: in the body, never in a URL (access logs keep URLs).
    The purpose follows the rule of contact reads (handlers.look_up_customer checks it)."""
    phone = fields.String(required=True, metadata={
        "description": "as typed: 138 1234 6138, +86 138-1234-6138 and 13812346138 are one customer"})
    purpose = fields.String(required=True, metadata={
        "description": "why the customer is looked up (at least 2 letters, at most 500 characters); logged "
                       "with who asked, in intake's contact-access log"})

    @validates("phone")
    def _phone(self, value, **kwargs):
        if normalize_phone(value) is None:
            raise ValidationError(NOT_A_PHONE)


class MaskedCustomerOut(Schema):
    name = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    language = fields.String()


class ComplaintOut(Schema):
    id = fields.String()
    reference = fields.String()
    kind = fields.String()
    status = fields.String()
    branch_code = fields.String()
    channel = fields.String()
    category = fields.String()
    category_source = fields.String()
    priority = fields.String()
    severity_flags = fields.List(fields.String())
    description = fields.String()
    occurred_at = fields.String(allow_none=True)
    received_at = fields.String()
    first_response_due = fields.String()
    resolution_due = fields.String()
    acknowledgement = fields.String()
    service = fields.Nested(ServiceIn, allow_none=True)
    products = fields.List(fields.Nested(ProductIn))
    customer = fields.Nested(MaskedCustomerOut)
    closed_at = fields.String(allow_none=True)  # when its case closed
    anonymised_at = fields.String(allow_none=True)  # when retention took its personal data
    converted_from = fields.String(allow_none=True, metadata={
        "description": "inquiry: a complaint converted from an inquiry (received_at stays the inquiry's)"})
    converted_at = fields.String(allow_none=True)
    conversion_note = fields.String(allow_none=True)


class ComplaintPage(Schema):
    items = fields.List(fields.Nested(ComplaintOut))
    next_cursor = fields.String(allow_none=True)


class SaleOut(Schema):
    id = fields.String()
    branch_code = fields.String()
    sold_at = fields.String()
    recorded_at = fields.String()
    contact_consent = fields.Boolean()
    customer = fields.Nested(MaskedCustomerOut)
    items = fields.List(fields.Nested(SaleItemIn))
    anonymised_at = fields.String(allow_none=True)


class CustomerComplaintOut(Schema):
    """Where one of the customer's complaints stands (the status follows its case)."""
    id = fields.String(metadata={"description": "also its case's id at investigation"})
    reference = fields.String()
    kind = fields.String()
    category = fields.String()
    priority = fields.String()
    status = fields.String(validate=validate.OneOf(STATUSES))
    branch_code = fields.String()
    received_at = fields.String()
    first_response_due = fields.String()
    resolution_due = fields.String()
    closed_at = fields.String(allow_none=True)


class CustomerSaleOut(Schema):
    id = fields.String()
    branch_code = fields.String()
    sold_at = fields.String()
    contact_consent = fields.Boolean()
    items = fields.List(fields.Nested(SaleItemIn))


class LookupCustomerOut(Schema):
    phone = fields.String(metadata={"description": "masked: 138****6138"})


class CustomerLookupOut(Schema):
    customer_ref = fields.String(metadata={"description": "the keyed hash of the phone the events carry"})
    customer = fields.Nested(LookupCustomerOut)
    complaints = fields.List(fields.Nested(CustomerComplaintOut), metadata={
        "description": "in the caller's scope, newest first, at most 50"})
    more_complaints = fields.Boolean(metadata={"description": "more than 50 in the caller's scope"})
    sales = fields.List(fields.Nested(CustomerSaleOut), metadata={
        "description": "in the caller's scope, newest first, at most 50"})
    more_sales = fields.Boolean()
