"""Investigation's events. Only the case events that other services act on today are here
(intake keeps each complaint's status from them); the engine's issue adds the rest."""
from marshmallow import Schema, fields, validate

from shared.messaging.catalogue.messages import CustomerMessageRequestedV1
from shared.messaging.envelope import IdString

SOURCE = "investigation"


class CaseEventV1(Schema):
    case_id = IdString(required=True)
    # The complaint the case was opened for (its id is the case's); None for a case opened
    # by an adverse reaction after a sale.
    complaint_id = IdString(required=True, allow_none=True)


class CaseAssignedV1(CaseEventV1):
    owner = fields.String(required=True, validate=validate.Length(min=1))


class CaseReopenedV1(CaseEventV1):
    escalation_level = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))


class CaseClosedV1(CaseEventV1):
    outcome = fields.String(required=True)  # satisfied, no_feedback, ...


SCHEMAS = {
    ("case_opened", 1): CaseEventV1,
    ("case_assigned", 1): CaseAssignedV1,
    ("case_acknowledged", 1): CaseEventV1,
    ("case_resolved", 1): CaseEventV1,
    ("case_reopened", 1): CaseReopenedV1,
    ("case_closed", 1): CaseClosedV1,
    ("customer_message_requested", 1): CustomerMessageRequestedV1,
}
