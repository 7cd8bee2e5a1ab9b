"""Reporting's events: the alerts it raises from what the other services' events add up to.
Each alert is published once, when raised (its event id is derived from the alert's id, so a
second raise of the same alert is a copy consumers drop)."""
from marshmallow import Schema, fields, validate

from shared.messaging.envelope import IdString, InstantString, Text

SOURCE = "reporting"


class AlertV1(Schema):
    alert_id = IdString(required=True)
    count = fields.Integer(strict=True, required=True, validate=validate.Range(min=1))
    within = fields.String(required=True)  # the window, ISO 8601 (P14D)
    first_at = InstantString(required=True)
    last_at = InstantString(required=True)
    branches = fields.List(Text(), required=True)


class RecurringProblemDetectedV1(AlertV1):
    """`count` complaints of one category at one branch (by: branch_category), or about one
    technician at any branch (by: technician), within the window."""
    by = fields.String(required=True, validate=validate.OneOf(("branch_category", "technician")))
    branch_code = Text(allow_none=True)
    category = Text(allow_none=True)
    technician_id = Text(allow_none=True)
    case_ids = fields.List(IdString(), required=True)


class SafetySignalRaisedV1(AlertV1):
    """`count` adverse reactions on one product batch across the chain within the window."""
    batch = Text(required=True)
    skus = fields.List(Text(), required=True)
    visit_ids = fields.List(IdString(), required=True)


SCHEMAS = {
    ("recurring_problem_detected", 1): RecurringProblemDetectedV1,
    ("safety_signal_raised", 1): SafetySignalRaisedV1,
}
