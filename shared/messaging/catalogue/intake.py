"""Intake's events: complaints, feedback and sales as registered, and the outcome of each
message it sends to a customer on another service's request."""
from datetime import datetime

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.messaging.catalogue.messages import CHANNELS, RECORD_TYPES
from shared.messaging.envelope import IdString, InstantString, Text, Tolerant

SOURCE = "intake"
KINDS = ("complaint", "suggestion", "praise", "inquiry")
# What a registration published again as a complaint was before (an inquiry converted at intake).
CONVERTED_FROM = ("inquiry",)
# Why a requested message did not reach the customer: no such complaint or sale here, a sale
# without consent to contact, no contact for any channel asked, or every send failed.
FAILURE_REASONS = ("unknown_record", "no_consent", "no_contact", "delivery_failed")


class MaskedCustomer(Tolerant):
    name = Text(allow_none=True)
    phone = Text(allow_none=True)
    email = Text(allow_none=True)


class ServiceRendered(Tolerant):
    code = Text(required=True)
    name = Text(allow_none=True)
    technician_id = Text(allow_none=True)


class ProductUsed(Tolerant):
    sku = Text(required=True)
    name = Text(allow_none=True)
    batch = Text(allow_none=True)


class ComplaintRegisteredV1(Schema):
    complaint_id = IdString(required=True)
    reference = Text(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    channel = Text(required=True)
    category = Text(required=True)
    category_source = fields.String(required=True, validate=validate.OneOf(("manual", "automatic")))
    priority = fields.String(required=True, validate=validate.OneOf(("urgent", "general", "low")))
    severity_flags = fields.List(Text(), required=True)
    description = Text(required=True)
    occurred_at = InstantString(required=True, allow_none=True)
    received_at = InstantString(required=True)
    region = Text(required=True)
    service = fields.Nested(ServiceRendered, required=True, allow_none=True)
    products = fields.List(fields.Nested(ProductUsed), required=True)
    customer_ref = Text(required=True, allow_none=True)
    customer_masked = fields.Nested(MaskedCustomer, required=True)
    customer_language = Text(required=True)
    first_response_due = InstantString(required=True)
    resolution_due = InstantString(required=True)
    # An inquiry converted into a complaint at intake is registered again as one: the same
    # complaint_id, a later sequence, its original received_at and the dues from it.
    converted_from = fields.String(allow_none=True, validate=validate.OneOf(CONVERTED_FROM))
    converted_at = InstantString(allow_none=True)
    conversion_note = Text(allow_none=True)  # why, as staff wrote it (contact data masked)

    @validates_schema(skip_on_field_errors=True)
    def _deadlines_after_receipt(self, data, **kwargs):
        """A deadline before the complaint was received is no deadline: the case would open
        already escalated to HQ."""
        received = _instant(data["received_at"])
        wrong = {name: ["must not be before received_at"] for name in ("first_response_due", "resolution_due")
                 if _instant(data[name]) < received}
        if wrong:
            raise ValidationError(wrong)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FeedbackRegisteredV1(ComplaintRegisteredV1):
    """A suggestion, praise or inquiry (a consultation, 咨询: answered, or converted into a complaint)."""
    kind = fields.String(required=True, validate=validate.OneOf(("suggestion", "praise", "inquiry")))


class SaleItem(Tolerant):
    type = fields.String(required=True, validate=validate.OneOf(("product", "service")))
    sku = Text(allow_none=True)
    code = Text(allow_none=True)
    name = Text(allow_none=True)
    product_type = Text(required=True)
    batch = Text(allow_none=True)
    technician_id = Text(allow_none=True)


class SaleRecordedV1(Schema):
    sale_id = IdString(required=True)
    sold_at = InstantString(required=True)
    recorded_at = InstantString(required=True)
    region = Text(required=True)
    customer_ref = Text(required=True, allow_none=True)
    customer_masked = fields.Nested(MaskedCustomer, required=True)
    contact_consent = fields.Boolean(required=True)
    items = fields.List(fields.Nested(SaleItem), required=True, validate=validate.Length(min=1))
    customer_language = Text()  # what aftercare's messages to the customer are written in


class CustomerMessageOutcome(Schema):
    # The customer_message_requested event this answers (also the envelope's causation_id).
    request_event_id = IdString(required=True)
    record_type = fields.String(required=True, validate=validate.OneOf(RECORD_TYPES))
    record_id = IdString(required=True)


class CustomerMessageSentV1(CustomerMessageOutcome):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))


class CustomerMessageFailedV1(CustomerMessageOutcome):
    reason = fields.String(required=True, validate=validate.OneOf(FAILURE_REASONS))
    detail = Text(required=True, allow_none=True)


SCHEMAS = {
    ("complaint_registered", 1): ComplaintRegisteredV1,
    ("feedback_registered", 1): FeedbackRegisteredV1,
    ("sale_recorded", 1): SaleRecordedV1,
    ("customer_message_sent", 1): CustomerMessageSentV1,
    ("customer_message_failed", 1): CustomerMessageFailedV1,
}
