"""Investigation's request and response shapes (marshmallow): one body schema per task, the
pause and resume bodies and the list queries. Requests reject unknown fields so a typo is
named instead of silently ignored."""
import unicodedata

from marshmallow import Schema, ValidationError, fields, validate

from services.investigation.domain import KINDS, RESPONSE_CHANNELS, STATES
from services.investigation.policy import ANSWER_ID_MAX, ANSWER_LANGUAGES, ANSWER_PURPOSES, REMEDY_TYPES
from shared.messaging.catalogue.investigation import RESPONSIBILITIES
from shared.web.fields import AwareDateTime
from shared.web.requests import PageQuery, Strict, StrictBoolean, Text

# A staff member's id as the chain's staff system writes it: letters, marks, digits,
# punctuation and symbols; no spaces, controls, invisible or bidirectional formatting
# characters (an id that reads as another's), nothing unassigned.
_NOT_IN_IDS = {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"}


def staff_id(value: str) -> None:
    if not 1 <= len(value) <= 100 or any(unicodedata.category(c) in _NOT_IN_IDS for c in value):
        raise ValidationError("a staff id: 1-100 visible characters, no spaces, controls or invisible "
                              "formatting characters")


def StaffId(**kwargs):
    return fields.String(validate=staff_id, **kwargs)


class AssignIn(Strict):
    owner = StaffId(required=True)
    note = Text(2000)


def StandardAnswerId():
    """The id of the standard answer the text was made from (GET /v1/standard-answers), if one
    was: the handler checks it against the policy's."""
    return fields.String(allow_none=True, validate=validate.Length(min=1, max=ANSWER_ID_MAX))


class RespondIn(Strict):
    """The first response: what the customer was told, and how. By sms, wechat or email intake
    sends `message` to the customer; by phone or in person it records what was said. Also an
    inquiry's answer (task `answer`)."""
    message = Text(2000, required=True)
    channel = fields.String(required=True, validate=validate.OneOf(RESPONSE_CHANNELS))
    standard_answer = StandardAnswerId()


class FindingsIn(Strict):
    facts = Text(4000, required=True)
    service_log_checked = StrictBoolean(required=True)
    product_batch_checked = StrictBoolean(required=True)
    root_cause = Text(2000, required=True)
    responsibility = fields.String(required=True, validate=validate.OneOf(RESPONSIBILITIES))
    signed_by = StaffId(required=True)
    signed_at = AwareDateTime()  # default: when recorded


class DecideIn(Strict):
    decision = fields.String(required=True, validate=validate.OneOf(("adopted", "declined")))
    note = Text(2000)


class PassOnIn(Strict):
    to = fields.List(StaffId(), required=True, validate=validate.Length(min=1, max=20))
    note = Text(2000)


class Amount(fields.Float):
    """A number in CNY, to the fen: not a string of digits, not a boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("an amount in CNY: a number")
        amount = super()._deserialize(value, attr, data, **kwargs)
        if round(amount, 2) != amount:
            raise ValidationError("at most two decimals (fen)")
        return amount


class ProposeRemedyIn(Strict):
    """A remedy: its type, its amount in CNY (0 for a free redo or an apology) and, for a
    promise, its deadline (none: the policy's for the type, if it has one)."""
    type = fields.String(required=True, validate=validate.OneOf(REMEDY_TYPES))
    amount = Amount(required=True, validate=validate.Range(min=0, max=10_000_000), allow_nan=False)
    currency = fields.String(load_default="CNY", validate=validate.OneOf(("CNY",)))
    deadline = AwareDateTime(allow_none=True)
    note = Text(2000, allow_none=True)


class ApproveIn(Strict):
    note = Text(2000)
    # The remedy the approver saw: another one proposed since (after a rejection) is 409, not approved.
    remedy_id = fields.UUID()


class RejectIn(Strict):
    reason = Text(2000, required=True)
    remedy_id = fields.UUID()


class FulfilIn(Strict):
    note = Text(2000)


class NotifyCustomerIn(Strict):
    """The written result: what was done, when it was completed, who is responsible, what follows."""
    measures = Text(2000, required=True)
    completed_at = AwareDateTime(required=True)
    responsible = StaffId(required=True)
    follow_up = Text(1000, required=True)
    standard_answer = StandardAnswerId()


class CorrectiveActionIn(Strict):
    action = Text(2000, required=True)
    owner = StaffId(required=True)
    due = AwareDateTime(required=True)


class CloseCorrectiveActionIn(Strict):
    note = Text(2000)


# The body of each task the API completes, by the API's name (the process file's task ids, and
# `reject`, which completes the approval with a refusal).
TASK_BODIES = {"assign": AssignIn(), "respond": RespondIn(), "acknowledge": RespondIn(), "answer": RespondIn(),
               "record_findings": FindingsIn(), "decide": DecideIn(), "pass_on": PassOnIn(),
               "propose_remedy": ProposeRemedyIn(), "approve": ApproveIn(), "reject": RejectIn(),
               "fulfil": FulfilIn(), "notify_customer": NotifyCustomerIn(),
               "open_corrective_action": CorrectiveActionIn(), "close_corrective_action": CloseCorrectiveActionIn()}
# The process's task an API name completes, where they differ.
PROCESS_TASK = {"reject": "approve"}


class PauseIn(Strict):
    reason = Text(500, required=True)


class ResumeIn(Strict):
    note = Text(500)


def _a_purpose(value: str) -> None:
    if sum(unicodedata.category(c).startswith("L") for c in value) < 2:
        raise ValidationError("a purpose of at least 2 letters: why the record is read")


class ArchiveQuery(Strict):
    """Why the record is read: logged with who read it (查阅登记); intake gives the contact for
    the same rule of purpose."""
    purpose = Text(500, _a_purpose, required=True)


class ContactQuery(Strict):
    """Why the staff member working the case reads the customer's contact now (a call back, the
    complaint handled): intake logs it with who read it. The same rule of purpose as intake's."""
    purpose = Text(500, _a_purpose, required=True)


class LegalHoldIn(Strict):
    reason = Text(500, required=True)  # why: a dispute, a lawsuit, a regulator's request


class CaseQuery(PageQuery):
    state = fields.String(validate=validate.OneOf(STATES))
    kind = fields.String(validate=validate.OneOf(KINDS))
    priority = fields.String(validate=validate.OneOf(("urgent", "general", "low")))
    category = fields.String(validate=validate.Length(max=100))
    branch = fields.String(validate=validate.Length(max=100))
    owner = fields.String(validate=staff_id)
    overdue = fields.Boolean()


class StandardAnswerQuery(Strict):
    """Which answers (none given: all); with `case_id`, each is also filled with that case's facts."""
    category = fields.String(validate=validate.Length(min=1, max=100))  # one of the policy's (checked there)
    purpose = fields.String(validate=validate.OneOf(ANSWER_PURPOSES))
    language = fields.String(validate=validate.OneOf(ANSWER_LANGUAGES))
    case_id = fields.String(validate=validate.Length(min=1, max=100))


class TaskQuery(PageQuery):
    """What the caller may complete is the list; these narrow it (a console's view in its URL)."""
    deadline = fields.String(validate=validate.OneOf(("breached", "soon")))
    branch = fields.String(validate=validate.Length(max=100))
    priority = fields.String(validate=validate.OneOf(("urgent", "general", "low")))
    task = fields.String(validate=validate.Length(max=100))  # a task's name, as the list shows it


# -- answers (for the OpenAPI document) -------------------------------------------------------

class ClockOut(Schema):
    name = fields.String()
    started_at = fields.String()
    due = fields.String()
    warning_at = fields.String()
    remaining_seconds = fields.Integer(allow_none=True)
    paused = fields.Boolean()
    paused_seconds = fields.Integer()
    state = fields.String()
    breach_level = fields.Integer()
    stopped_at = fields.String(allow_none=True)


class OpenTaskOut(Schema):
    name = fields.String()
    title = fields.String(allow_none=True)
    roles = fields.List(fields.String())
    owner_may_complete = fields.Boolean()
    clock = fields.String(allow_none=True)
    due = fields.String(allow_none=True)
    warning_at = fields.String(allow_none=True)  # breaching soon from here


class TimelineOut(Schema):
    at = fields.String()
    actor = fields.String()
    role = fields.String(allow_none=True)
    what = fields.String()
    detail = fields.Dict()


class RemedyOut(Schema):
    id = fields.String()
    type = fields.String()
    amount = fields.Float()
    currency = fields.String()
    deadline = fields.String(allow_none=True)
    status = fields.String()
    approvers = fields.List(fields.String())
    promise = fields.String(allow_none=True)


class CaseOut(Schema):
    id = fields.String()
    kind = fields.String()
    complaint_id = fields.String(allow_none=True)
    reference = fields.String()
    branch_code = fields.String()
    state = fields.String()
    priority = fields.String()
    category = fields.String()
    owner = fields.String(allow_none=True)
    escalation_level = fields.Integer()
    overdue = fields.Boolean()
    open_tasks = fields.List(fields.Nested(OpenTaskOut))
    remedies = fields.List(fields.Nested(RemedyOut))
    written_result = fields.Dict(allow_none=True)
    follow_up = fields.Dict(allow_none=True)
    corrective_action = fields.Dict(allow_none=True)
    reopened = fields.Integer()
    origin = fields.Dict(allow_none=True)
    converted_from = fields.String(allow_none=True)  # "inquiry": an inquiry converted into this complaint
    converted_at = fields.String(allow_none=True)
    sla = fields.Dict(keys=fields.String(), values=fields.Nested(ClockOut))
    timeline = fields.List(fields.Nested(TimelineOut))


class CasePage(Schema):
    items = fields.List(fields.Nested(CaseOut))
    next_cursor = fields.String(allow_none=True)


class TaskOut(OpenTaskOut):
    case_id = fields.String()
    reference = fields.String()
    priority = fields.String()
    kind = fields.String()
    branch_code = fields.String()
    waiting_since = fields.String()
    paused = fields.Boolean()


class TaskCounts(Schema):
    waiting = fields.Integer()
    soon = fields.Integer()      # warned, not yet due
    breached = fields.Integer()  # due now or before


class TaskPage(Schema):
    items = fields.List(fields.Nested(TaskOut))
    next_cursor = fields.String(allow_none=True)
    counts = fields.Nested(TaskCounts)  # the filters' tasks in all (deadline aside)


class ContactOut(Schema):
    record_type = fields.String()
    record_id = fields.String()
    name = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    language = fields.String(allow_none=True)


class ArchiveOut(Schema):
    case = fields.Nested(CaseOut)
    contact = fields.Nested(ContactOut, allow_none=True)
    contact_unavailable = fields.String(allow_none=True)  # why intake gave no contact
    purpose = fields.String()
    accessed_at = fields.String()
    accessed_by = fields.String()


class CaseContactOut(Schema):
    case_id = fields.String()
    reference = fields.String()
    contact = fields.Nested(ContactOut)
    purpose = fields.String(metadata={"description": "as intake logged it"})
    read_at = fields.String()
    read_by = fields.String()


class LegalHoldOut(Schema):
    case_id = fields.String()
    reference = fields.String()
    legal_hold = fields.Dict(allow_none=True)  # {"reason", "by", "at"}; null when not held
    anonymised_at = fields.String(allow_none=True)


# -- standard answers (GET /v1/standard-answers) -------------------------------------------------

class StandardAnswerOut(Schema):
    id = fields.String()
    category = fields.String()
    purpose = fields.String()
    language = fields.String()
    title = fields.String()
    text = fields.String(metadata={"description": "with its placeholders: {customer}, {branch}, {reference}, "
                                                 "{first_response_due}, {resolution_due}"})
    complaints = fields.Integer(metadata={"description": "complaints of its category received in the last "
                                                         "window_days in the caller's scope"})
    filled = fields.String(allow_none=True, metadata={"description": "the text with the case's facts (case_id "
                                                                     "given), else null"})


class StandardAnswerList(Schema):
    answers = fields.List(fields.Nested(StandardAnswerOut), metadata={
        "description": "most complaints first; ties by the category's order in the policy, then id"})
    window_days = fields.Integer()
    as_of = fields.String()


# -- staff notices for the console (GET /v1/notifications) -------------------------------------------

class NoticeQuery(PageQuery):
    """Only the page (limit 1-200, default 50; cursor): the caller's role and scope are the filter."""


class NoticeOut(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "approval_requested, approval_overdue, escalated, sla_warning, "
                                                  "overdue, corrective_action_overdue, customer_message_failed "
                                                  "or other"})
    case_id = fields.String()
    reference = fields.String()
    branch_code = fields.String()
    text = fields.String()
    created_at = fields.String()
    addressed_to = fields.Dict(metadata={"description": "role, and branch or region (neither: every branch)"})


class NoticePage(Schema):
    items = fields.List(fields.Nested(NoticeOut))
    next_cursor = fields.String(allow_none=True)
