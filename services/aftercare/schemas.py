"""Aftercare's request and response shapes (marshmallow): the queue's query, a visit's read (the
contact on request, with a purpose), an agent's claim, an attempt with seed 004's questionnaire, and
what the API answers. Requests reject unknown fields so a typo is
named instead of silently ignored."""
import unicodedata

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.aftercare.domain import FINISHED, KINDS, OUTCOMES
from shared.messaging.catalogue.investigation import ANSWER_ID_MAX
from shared.web.fields import AwareDateTime
from shared.web.requests import PageQuery, Strict, StrictBoolean, Text

ATTEMPT_CHANNELS = ("phone", "sms", "wechat", "email", "in_person")
# A standard answer's id (investigation.standard_answers in the chain policy): safety-first-response-zh.
# To the very end (\Z: `$` would let a trailing newline through, an id reporting counts apart).
STANDARD_ANSWER_ID = r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z"
QUEUE_STATUSES = ("open", "scheduled", "in_progress", *FINISHED)


class VisitQuery(PageQuery):
    """The agent's queue: open visits due by `due_before` (default: now; overdue ones first by
    time), allergy checks first; another status lists those visits (due_before then optional)."""
    due_before = AwareDateTime()
    status = fields.String(load_default="open", validate=validate.OneOf(QUEUE_STATUSES))
    branch = fields.String(validate=validate.Length(min=1, max=100))
    unclaimed = fields.Boolean(load_default=False, truthy={"true"}, falsy={"false"},
                               metadata={"description": "true: leave out the visits a colleague's claim holds now "
                                                        "(the caller's own claims stay)"})


def _a_purpose(value: str) -> None:
    if sum(unicodedata.category(c).startswith("L") for c in value) < 2:
        raise ValidationError("a purpose of at least 2 letters: why the contact is read")


class VisitReadQuery(Strict):
    """`GET /v1/visits/{id}`: the visit alone, or with `contact=true` and a `purpose` the
    customer's contact read from intake now (intake logs the read with the purpose)."""
    contact = fields.Boolean(load_default=False, truthy={"true"}, falsy={"false"},
                             metadata={"description": "true: read the customer's contact from intake now"})
    purpose = Text(500, _a_purpose, metadata={"description": "why the contact is read (required with contact=true; "
                                                             "intake logs it)"})

    @validates_schema
    def _purpose_with_contact(self, data, **kwargs):
        if data.get("contact") and "purpose" not in data:
            raise ValidationError({"purpose": ["required with contact=true: say why the contact is read"]})
        if not data.get("contact") and "purpose" in data:
            raise ValidationError({"purpose": ["a purpose comes with contact=true"]})


class ClaimIn(Strict):
    """`POST /v1/visits/{id}/claim`: how long the agent works the visit (the body is optional:
    without it, the policy's `aftercare.claim_for`)."""
    minutes = fields.Integer(strict=True, validate=validate.Range(min=1, max=60),
                             metadata={"description": "how long the claim runs, 1-60 (default: the chain policy's "
                                                      "aftercare.claim_for, 10 minutes)"})


class AnswersIn(Strict):
    """Seed 004's questions: met expectations, discomfort or allergy, packaging and
    instructions, satisfaction 1-5, suggestions; a follow-up asks whether it was resolved."""
    met_expectations = StrictBoolean(required=True)
    discomfort = StrictBoolean(required=True)
    discomfort_description = Text(2000, allow_none=True)
    item = Text(100, allow_none=True)  # the sku or service code the discomfort is about
    packaging_ok = StrictBoolean(allow_none=True)  # null: not asked (a service has no packaging)
    satisfaction = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=5))
    resolved = StrictBoolean(allow_none=True)
    suggestions = Text(2000, allow_none=True)


class AttemptIn(Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    channel = fields.String(load_default="phone", validate=validate.OneOf(ATTEMPT_CHANNELS))
    answers = fields.Nested(AnswersIn)
    call_back_at = AwareDateTime()
    note = Text(2000, allow_none=True)
    standard_answer = fields.String(allow_none=True, validate=[
        validate.Length(min=1, max=ANSWER_ID_MAX),
        validate.Regexp(STANDARD_ANSWER_ID, error="a standard answer's id: letters, digits, '-', '_' and '.'")],
        metadata={"description": "the id of the standard answer the agent used (the chain policy's "
                                 f"investigation.standard_answers), at most {ANSWER_ID_MAX} characters"})

    @validates_schema
    def _by_outcome(self, data, **kwargs):
        outcome, wrong = data.get("outcome"), {}
        if outcome == "reached" and "answers" not in data:
            wrong["answers"] = ["the customer was reached: record their answers"]
        if outcome != "reached" and data.get("answers") is not None:
            wrong["answers"] = ["answers come with outcome reached"]
        if outcome == "call_back" and "call_back_at" not in data:
            wrong["call_back_at"] = ["when the customer asked to be called back"]
        if outcome != "call_back" and "call_back_at" in data:
            wrong["call_back_at"] = ["a time to call back comes with outcome call_back"]
        if wrong:
            raise ValidationError(wrong)


# -- answers (for the OpenAPI document) -------------------------------------------------------

class ItemOut(Schema):
    type = fields.String()
    sku = fields.String(allow_none=True)
    code = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    product_type = fields.String()
    batch = fields.String(allow_none=True)
    technician_id = fields.String(allow_none=True)


class VisitOut(Schema):
    id = fields.String()
    kind = fields.String(validate=validate.OneOf(KINDS))
    status = fields.String(validate=validate.OneOf(QUEUE_STATUSES[1:]))
    branch_code = fields.String()
    due_at = fields.String(metadata={"description": "when it was planned for"})
    call_at = fields.String(metadata={"description": "when it is next called"})
    abandon_at = fields.String()
    allergy_check = fields.Boolean()
    overdue = fields.Boolean(metadata={"description": "open and due on an earlier day"})
    sale_id = fields.String(allow_none=True)
    case_id = fields.String(allow_none=True)
    customer_ref = fields.String(allow_none=True)
    customer_masked = fields.Dict()
    customer_language = fields.String()
    attempts_made = fields.Integer()
    standard_answer = fields.String(allow_none=True, metadata={
        "description": "the standard answer the last attempt that used one used"})
    items = fields.List(fields.Nested(ItemOut))
    claimed_by = fields.String(allow_none=True, metadata={
        "description": "the staff member working it now (their token's subject); null when nobody's claim runs"})
    claimed_until = fields.String(allow_none=True, metadata={"description": "when that claim runs out"})


class VisitDetailOut(VisitOut):
    follows = fields.Dict(metadata={"description": "the sale (when, what) or the case (reference, remedy)"})
    attempts = fields.List(fields.Dict())
    message = fields.Dict(allow_none=True)
    outcome = fields.Dict(allow_none=True)
    finished_at = fields.String(allow_none=True)
    contact = fields.Dict(allow_none=True, metadata={"description": "with contact=true: from intake, for the caller "
                                                                 "(logged there); null when not asked"})
    contact_unavailable = fields.String(allow_none=True)


class VisitPage(Schema):
    items = fields.List(fields.Nested(VisitOut))
    next_cursor = fields.String(allow_none=True)
