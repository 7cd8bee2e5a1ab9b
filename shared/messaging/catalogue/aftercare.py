"""Aftercare's events: return visits after sales and services, satisfaction follow-ups after
resolved cases, and what the visits find. Investigation consumes the follow-up outcomes (they
close or reopen the case) and adverse reactions (they open an urgent case); reporting counts
them all. A visit's correlation id is the sale's id (return visits) or the case's (follow-ups).
No contact data: the customer is `customer_ref` and masked names only."""
from marshmallow import Schema, fields, validate

from shared.messaging.catalogue.investigation import StandardAnswerId
from shared.messaging.catalogue.messages import CustomerMessageRequestedV1
from shared.messaging.envelope import IdString, InstantString, Text, Tolerant

SOURCE = "aftercare"
VISIT_KINDS = ("return", "follow_up")


class VisitEventV1(Schema):
    visit_id = IdString(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(VISIT_KINDS))
    case_id = IdString(allow_none=True)   # a follow-up's case
    sale_id = IdString(allow_none=True)   # a return visit's sale
    customer_ref = fields.String(allow_none=True)


class VisitAnswers(Tolerant):
    """Seed 004's questions; a follow-up also asks whether the problem was resolved."""
    met_expectations = fields.Boolean(allow_none=True)
    discomfort = fields.Boolean(allow_none=True)
    packaging_ok = fields.Boolean(allow_none=True)
    satisfaction = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=5))
    resolved = fields.Boolean(allow_none=True)
    suggestions = Text(allow_none=True)
    discomfort_description = Text(allow_none=True)
    item = Text(allow_none=True)  # the item (sku or service code) the discomfort is about


class VisitScheduledV1(VisitEventV1):
    due_at = InstantString(required=True)


class VisitCancelledV1(VisitEventV1):
    """A visit no longer wanted: a follow-up whose case was reopened."""
    reason = Text(required=True)


class VisitAttemptedV1(VisitEventV1):
    channel = fields.String()
    reached = fields.Boolean()
    attempt = fields.Integer(strict=True, validate=validate.Range(min=1))
    outcome = fields.String(validate=validate.OneOf(("reached", "not_reached", "call_back")))
    call_back_at = InstantString()  # the customer asked to be called again then
    standard_answer = StandardAnswerId()  # the standard answer the agent used (policy data)


class VisitCompletedV1(VisitEventV1):
    answers = fields.Nested(VisitAnswers, required=True)
    score = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=5))
    standard_answer = StandardAnswerId()  # the one used on the call that reached the customer


class VisitAbandonedV1(VisitEventV1):
    attempts = fields.Integer(strict=True, validate=validate.Range(min=0))
    reason = Text(allow_none=True)


class DissatisfactionReportedV1(VisitEventV1):
    """A follow-up found the customer unsatisfied (a score of 1-2 or "not resolved")."""
    case_id = IdString(required=True)
    score = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=5))
    resolved = fields.Boolean(allow_none=True)
    comment = Text(allow_none=True)


class ProductOut(Tolerant):
    sku = Text(allow_none=True)
    name = Text(allow_none=True)
    product_type = Text(allow_none=True)
    batch = Text(allow_none=True)


class AdverseReactionReportedV1(VisitEventV1):
    """Discomfort or an allergy after a sale or service: investigation opens an urgent case."""
    sale_id = IdString(required=True)
    technician_id = Text(allow_none=True)
    product = fields.Nested(ProductOut, allow_none=True)
    description = Text(validate.Length(max=4000), allow_none=True)
    severity_flags = fields.List(fields.String(), load_default=list)
    reported_at = InstantString(required=True)
    customer_masked = fields.Dict(keys=fields.String(), values=fields.String())
    customer_language = fields.String(allow_none=True)


SCHEMAS = {
    ("customer_message_requested", 1): CustomerMessageRequestedV1,
    ("visit_scheduled", 1): VisitScheduledV1,
    ("visit_cancelled", 1): VisitCancelledV1,
    ("visit_attempted", 1): VisitAttemptedV1,
    ("visit_completed", 1): VisitCompletedV1,
    ("visit_abandoned", 1): VisitAbandonedV1,
    ("dissatisfaction_reported", 1): DissatisfactionReportedV1,
    ("adverse_reaction_reported", 1): AdverseReactionReportedV1,
}
