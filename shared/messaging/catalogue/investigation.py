"""Investigation's events: a case's life from opening to closure. Every payload names the case
and the complaint it was opened for (None for a case opened by an adverse reaction). No contact
data: the customer is `customer_ref` and masked names only. Fields added after the first
release are optional, so that an event of an older producer still reads."""
from marshmallow import Schema, fields, validate

from shared.messaging.catalogue.intake import MaskedCustomer
from shared.messaging.catalogue.messages import CustomerMessageRequestedV1
from shared.messaging.envelope import IdString, InstantString, Text

SOURCE = "investigation"
CLOCKS = ("first_response", "resolution", "approval")
REMEDY_TYPES = ("apology", "redo_service", "redye", "refund", "partial_refund", "exchange", "gift", "discount",
                "voucher", "medical_expense")
RESPONSIBILITIES = ("ours", "customer_misuse", "third_party", "unfounded")
KINDS = ("complaint", "suggestion", "praise", "inquiry")


ANSWER_ID_MAX = 100  # a standard answer's id, at most (the policy's check, the APIs' bodies, the events)


def StandardAnswerId():
    """The id of the standard answer (the policy's investigation.standard_answers) a text was made
    from; None: written without one."""
    return Text(validate.Length(min=1, max=ANSWER_ID_MAX), allow_none=True)


class CaseEventV1(Schema):
    case_id = IdString(required=True)
    # The complaint the case was opened for (its id is the case's); None for a case opened
    # by an adverse reaction after a sale.
    complaint_id = IdString(required=True, allow_none=True)
    actor = Text(allow_none=True)  # who did it (a staff id); None: the engine (a timer)
    actor_role = Text(allow_none=True)


class CaseOpenedV1(CaseEventV1):
    kind = fields.String(validate=validate.OneOf(KINDS))
    reference = fields.String()
    category = fields.String()
    priority = fields.String(validate=validate.OneOf(("urgent", "general", "low")))
    severity_flags = fields.List(fields.String())
    region = fields.String()
    customer_ref = fields.String(allow_none=True)
    customer_masked = fields.Nested(MaskedCustomer, allow_none=True)  # for the reports' scrubbing of texts
    received_at = InstantString()
    first_response_due = InstantString()
    resolution_due = InstantString()
    process = fields.String()  # the process the case runs: its id and content hash
    origin = fields.Nested("CaseOpenedOrigin", allow_none=True)  # a case not opened for a complaint
    # "inquiry": opened as the complaint an inquiry was converted into (its inquiry's case was not here)
    converted_from = fields.String(validate=validate.OneOf(("inquiry",)))


class CaseAssignedV1(CaseEventV1):
    owner = fields.String(required=True, validate=validate.Length(min=1))


class CaseAcknowledgedV1(CaseEventV1):
    """The first response (an inquiry's answer too)."""
    channel = fields.String()
    within_sla = fields.Boolean()
    standard_answer = StandardAnswerId()


class CaseConvertedV1(CaseEventV1):
    """An inquiry's case became the complaint intake converted it into: its category, priority and
    deadlines (from the original receipt) are the complaint's; its process starts again at assign."""
    from_kind = fields.String(required=True, validate=validate.OneOf(("inquiry",)))
    kind = fields.String(required=True, validate=validate.OneOf(("complaint",)))
    category = fields.String(required=True)
    priority = fields.String(required=True, validate=validate.OneOf(("urgent", "general", "low")))
    severity_flags = fields.List(fields.String())
    received_at = InstantString(required=True)  # the inquiry's: the clocks count from it
    converted_at = InstantString()
    first_response_due = InstantString(required=True)
    resolution_due = InstantString(required=True)
    process = fields.String()


class CaseReopenedV1(CaseEventV1):
    escalation_level = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    reopened = fields.Integer(strict=True, validate=validate.Range(min=1))  # times reopened, this one included
    visit_id = IdString(allow_none=True)  # the follow-up that found the customer unsatisfied
    score = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=5))
    reason = Text(allow_none=True)
    resolution_due = InstantString()


class CaseClosedV1(CaseEventV1):
    outcome = fields.String(required=True)  # satisfied, no_feedback, adopted, declined, passed_on...
    corrective_action = fields.String(allow_none=True)  # open | done | None (none was needed)


class SlaEventV1(CaseEventV1):
    clock = fields.String(required=True, validate=validate.OneOf(CLOCKS))
    due = InstantString(required=True)
    level = fields.Integer(strict=True, validate=validate.Range(min=0))  # the breach level (1: at the deadline)


class CaseEscalatedV1(CaseEventV1):
    level = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    to_role = fields.String(required=True)
    to_branch = fields.String(allow_none=True)
    to_region = fields.String(allow_none=True)
    clock = fields.String(validate=validate.OneOf(CLOCKS))  # a clock's breach...
    reason = fields.String(validate=validate.OneOf(("promise_broken", "reopened")))  # ...or this


class FindingsRecordedV1(CaseEventV1):
    facts = Text()  # what the investigation found happened
    root_cause = Text(required=True)
    responsibility = fields.String(required=True, validate=validate.OneOf(RESPONSIBILITIES))
    signed_by = Text(required=True)
    signed_at = InstantString(required=True)


class SlaPausedV1(CaseEventV1):
    reason = Text(required=True)


class SlaResumedV1(CaseEventV1):
    paused_seconds = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    # Each running clock's deadline after the pause, by clock.
    due = fields.Dict(keys=fields.String(validate=validate.OneOf(CLOCKS)), values=InstantString(), required=True)


class SuggestionDecidedV1(CaseEventV1):
    decision = fields.String(required=True, validate=validate.OneOf(("adopted", "declined")))


class PraisePassedOnV1(CaseEventV1):
    to = fields.List(Text(), required=True)


class CaseOpenedOrigin(Schema):
    type = fields.String(required=True, validate=validate.OneOf(("adverse_reaction",)))
    visit_id = IdString(required=True)
    sale_id = IdString(required=True)
    technician_id = Text(allow_none=True)
    product = fields.Dict(allow_none=True)


class RemedyEventV1(CaseEventV1):
    remedy_id = IdString(required=True)
    type = fields.String(required=True, validate=validate.OneOf(REMEDY_TYPES))
    amount = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0))
    currency = fields.String(validate=validate.OneOf(("CNY",)))
    deadline = InstantString(allow_none=True)  # set: the remedy is a promise


class RemedyProposedV1(RemedyEventV1):
    status = fields.String(required=True, validate=validate.OneOf(("approved", "awaiting_approval")))
    approvers = fields.List(fields.String())  # who may approve it, lowest authority first
    note = Text(allow_none=True)


class RemedyApprovedV1(RemedyEventV1):
    within_authority = fields.Boolean()  # the proposer's own authority covered it


class RemedyRejectedV1(RemedyEventV1):
    reason = Text(required=True)


class RemedyFulfilledV1(RemedyEventV1):
    fulfilled_at = InstantString(required=True)
    promise = fields.String(allow_none=True, validate=validate.OneOf(("kept", "broken")))


class PromiseKeptV1(RemedyEventV1):
    fulfilled_at = InstantString(required=True)


class CustomerNotifiedV1(CaseEventV1):
    request_event_id = IdString(required=True)  # the customer_message_requested event intake answers
    language = fields.String()
    completed_at = InstantString()
    responsible = Text()
    measures = Text()
    follow_up = Text()
    standard_answer = StandardAnswerId()


class CaseResolvedV1(CaseEventV1):
    """The written result went to the customer: aftercare schedules the satisfaction follow-up."""
    reference = fields.String()
    resolved_at = InstantString()
    within_sla = fields.Boolean()
    customer_ref = fields.String(allow_none=True)
    customer_language = fields.String()
    record_type = fields.String(validate=validate.OneOf(("complaint", "sale")))  # whom intake contacts
    record_id = IdString()
    responsibility = fields.String(allow_none=True)
    reopened = fields.Integer(strict=True, validate=validate.Range(min=0))
    remedy = fields.Dict(allow_none=True)
    follow_up_plan = Text(allow_none=True)


class CorrectiveActionOpenedV1(CaseEventV1):
    action = Text(required=True)
    owner = Text(required=True)
    due = InstantString(required=True)


class CorrectiveActionClosedV1(CorrectiveActionOpenedV1):
    done_at = InstantString(required=True)
    on_time = fields.Boolean(required=True)


class ArchiveAccessedV1(CaseEventV1):
    """A closed case read from the archive (who and in which role: actor, actor_role)."""
    purpose = Text(required=True)
    accessed_at = InstantString(required=True)
    contact_read = fields.Boolean()  # intake gave the customer's contact with it


SCHEMAS = {
    ("case_opened", 1): CaseOpenedV1,
    ("case_assigned", 1): CaseAssignedV1,
    ("case_acknowledged", 1): CaseAcknowledgedV1,
    ("case_converted", 1): CaseConvertedV1,
    ("case_resolved", 1): CaseResolvedV1,
    ("case_reopened", 1): CaseReopenedV1,
    ("case_closed", 1): CaseClosedV1,
    ("sla_warning", 1): SlaEventV1,
    ("sla_breached", 1): SlaEventV1,
    ("case_escalated", 1): CaseEscalatedV1,
    ("findings_recorded", 1): FindingsRecordedV1,
    ("sla_paused", 1): SlaPausedV1,
    ("sla_resumed", 1): SlaResumedV1,
    ("suggestion_decided", 1): SuggestionDecidedV1,
    ("praise_passed_on", 1): PraisePassedOnV1,
    ("customer_message_requested", 1): CustomerMessageRequestedV1,
    ("remedy_proposed", 1): RemedyProposedV1,
    ("remedy_approved", 1): RemedyApprovedV1,
    ("remedy_rejected", 1): RemedyRejectedV1,
    ("promise_made", 1): RemedyEventV1,
    ("promise_kept", 1): PromiseKeptV1,
    ("promise_broken", 1): RemedyEventV1,
    ("remedy_fulfilled", 1): RemedyFulfilledV1,
    ("customer_notified", 1): CustomerNotifiedV1,
    ("corrective_action_opened", 1): CorrectiveActionOpenedV1,
    ("corrective_action_closed", 1): CorrectiveActionClosedV1,
    ("archive_accessed", 1): ArchiveAccessedV1,
}


# -- retention: an HQ admin's legal hold keeps a case's personal data past the retention ----------
# (intake holds the complaint's contact as long as its case is held)

class LegalHoldReleasedV1(CaseEventV1):
    sale_id = IdString()  # a case opened by an adverse reaction: the sale intake keeps while held


class LegalHoldSetV1(LegalHoldReleasedV1):
    reason = Text(validate.Length(min=1, max=500), required=True)


SCHEMAS.update({("legal_hold_set", 1): LegalHoldSetV1, ("legal_hold_released", 1): LegalHoldReleasedV1})
