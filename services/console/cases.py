"""A case's page (`/cases/{id}`, the id investigation's API uses) and the forms of its open tasks.

The page reads investigation's `GET /v1/cases/{id}` with the signed-in staff member's own token
and shows the case: its state, SLA clocks (paused shown), timeline, signed findings, remedies and
approvals, promises, escalation, written result, corrective action; and, for each open task the
staff member may complete (by role, as the case's owner, or, for an approval, as one of the roles
whose authority covers the remedy), its form. A form posts to `/cases/{id}/tasks/{task}`, which
calls investigation's `POST /v1/cases/{id}/tasks/{task}` and shows the case again: with htmx the
case's part of the page is swapped (a refused form alone, with HX-Retarget), without it a plain
POST answers 303 to the page. What investigation refuses appears beside the field it names; a
service that does not answer keeps what was typed. Out of scope answers the console's 404 page, a
role that may not read cases its 403 page.

The respond, answer (an inquiry's) and written-result forms offer the chain's standard answers
(standard_answers.py), and the page says in one line who the customer is, linking to their file
(customer_summary.py; left out when reporting is slow or away). An open inquiry may be converted
into a complaint (`/cases/{id}/convert`, intake's convert); investigation converts the case a
moment later.

The customer's contact: the page shows the masked customer; a staff member who works cases
(investigator, store, regional or HQ manager) may ask for the full contact with a purpose (a
choice or their own words). The form posts to `/cases/{id}/contact` (`show_contact`), which
calls investigation's `GET /v1/cases/{id}/contact?purpose=`; investigation asks intake with the
staff member's identity and intake logs the read with the purpose. The contact is shown in place
(htmx) and kept nowhere: not in the session, not in the page's later swaps, `no-store`."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import eventlet
import sqlalchemy as sa
from werkzeug.wrappers import Response

from services.console import customer_summary, models, rendering, standard_answers, web
from services.console.clients import ServiceDown, ServiceRefused
from services.console.front_desk import FLAG_LABELS, FLAGS
from services.console.rendering import N_

log = logging.getLogger("closeloop.console")
_CASE_ID = re.compile(r"\A[0-9A-Za-z-]{1,64}\Z")

# -- labels (English msgids, translated where shown) -------------------------------------------

STATES = {"open": N_("Open"), "assigned": N_("Assigned"), "acknowledged": N_("Acknowledged"),
          "investigated": N_("Investigated"), "resolved": N_("Resolved"), "reopened": N_("Reopened"),
          "closed": N_("Closed")}
KINDS = {"complaint": N_("Complaint"), "suggestion": N_("Suggestion"), "praise": N_("Praise"), "inquiry": N_("Inquiry")}
CATEGORIES = {"service_quality": N_("Service quality"), "product_quality": N_("Product quality"),
              "hygiene_environment": N_("Hygiene and environment"), "booking": N_("Booking"), "price": N_("Price"),
              "staff_attitude": N_("Staff attitude"), "after_sales": N_("After-sales"), "safety": N_("Safety")}
CHANNELS = {"phone": N_("Phone"), "in_person": N_("In person"), "sms": N_("SMS"), "wechat": N_("WeChat"),
            "email": N_("Email"), "front_desk": N_("Front desk"), "social_media": N_("Social media"),
            "web_form": N_("Web form"), "online_chat": N_("Online chat")}
RESPONSE_CHANNELS = ("phone", "in_person", "sms", "wechat", "email")
CLOCKS = {"first_response": N_("First response"), "resolution": N_("Resolution"), "approval": N_("Approval")}
CLOCK_STATES = {"running": N_("Running"), "warning": N_("Warning"), "breached": N_("Breached"), "met": N_("Met"),
                "met_late": N_("Met late")}
RESPONSIBILITIES = {"ours": N_("Ours"), "customer_misuse": N_("Customer misuse"),
                    "third_party": N_("Third party"), "unfounded": N_("Unfounded")}
REMEDY_TYPES = {"apology": N_("Apology"), "redo_service": N_("Redo the service (free)"),
                "redye": N_("Re-dye (free)"), "refund": N_("Refund"), "partial_refund": N_("Partial refund"),
                "exchange": N_("Exchange"), "gift": N_("Gift"), "discount": N_("Discount"), "voucher": N_("Voucher"),
                "medical_expense": N_("Medical expenses")}
REMEDY_STATUSES = {"awaiting_approval": N_("Awaiting approval"), "approved": N_("Approved"),
                   "rejected": N_("Rejected"), "fulfilled": N_("Fulfilled")}
PROMISES = {"kept": N_("Promise kept"), "broken": N_("Promise broken")}
DECISIONS = {"adopted": N_("Adopted"), "declined": N_("Declined")}
# The case's tasks by the API's names (the process's titles are data; these are the console's words).
TASKS = {"assign": N_("Assign an owner"), "respond": N_("First response to the customer"),
         "acknowledge": N_("Acknowledge"), "record_findings": N_("Record findings"),
         "propose_remedy": N_("Propose a remedy"), "approve": N_("Approve the remedy"),
         "reject": N_("Reject the remedy"), "fulfil": N_("Fulfil the remedy"),
         "notify_customer": N_("Written result to the customer"),
         "open_corrective_action": N_("Open a corrective action"),
         "close_corrective_action": N_("Close the corrective action"), "decide": N_("Adopt or decline"),
         "pass_on": N_("Pass the praise on"), "await_follow_up": N_("Satisfaction follow-up (aftercare)"),
         "answer": N_("Answer the inquiry")}
EVENTS = {"case_opened": N_("Case opened"), "case_assigned": N_("Owner assigned"),
          "case_acknowledged": N_("First response given"), "sla_warning": N_("Deadline warning"),
          "sla_breached": N_("Deadline breached"), "case_escalated": N_("Escalated"),
          "findings_recorded": N_("Findings recorded"), "remedy_proposed": N_("Remedy proposed"),
          "remedy_approved": N_("Remedy approved"), "remedy_rejected": N_("Remedy rejected"),
          "promise_made": N_("Promise made"), "promise_kept": N_("Promise kept"),
          "promise_broken": N_("Promise broken"), "remedy_fulfilled": N_("Remedy fulfilled"),
          "customer_notified": N_("Written result sent"), "case_resolved": N_("Resolved"),
          "case_reopened": N_("Reopened"), "case_closed": N_("Closed"),
          "corrective_action_opened": N_("Corrective action opened"),
          "corrective_action_closed": N_("Corrective action closed"),
          "corrective_action_overdue": N_("Corrective action overdue"),
          "suggestion_decided": N_("Suggestion decided"), "praise_passed_on": N_("Praise passed on"),
          "sla_paused": N_("Waiting for the customer"), "sla_resumed": N_("Customer back: clocks run again"),
          "customer_message_requested": N_("Message to the customer requested"),
          "customer_message_sent": N_("Message to the customer sent"),
          "customer_message_failed": N_("Message to the customer failed"),
          "follow_up_received": N_("Follow-up outcome received"), "archive_accessed": N_("Archive read"),
          "case_converted": N_("Converted into a complaint")}
# How a closed case ended (investigation's outcomes).
OUTCOMES = {"satisfied": N_("Customer satisfied"), "no_feedback": N_("No feedback from the customer"),
            "adopted": N_("Adopted"), "declined": N_("Declined"), "passed_on": N_("Praise passed on"),
            "completed": N_("Completed"), "answered": N_("Answered")}
ROLE_LABELS = rendering.ROLE_LABELS
LABELS = {"state": STATES, "kind": KINDS, "category": CATEGORIES, "channel": CHANNELS, "clock": CLOCKS,
          "clock_state": CLOCK_STATES, "responsibility": RESPONSIBILITIES, "remedy": REMEDY_TYPES,
          "remedy_status": REMEDY_STATUSES, "promise": PROMISES, "decision": DECISIONS, "task": TASKS,
          "event": EVENTS, "role": ROLE_LABELS, "priority": rendering.PRIORITY_LABELS, "outcome": OUTCOMES}

# The contact on request: the roles that work cases (investigation's rule), the purposes offered.
CONTACT_ROLES = frozenset({"investigator", "store_manager", "regional_manager", "hq_admin"})
CONTACT_PURPOSES = {"call_back": N_("Call the customer back"), "complaint": N_("Handle the complaint")}
CONTACT_CLOSED = N_("The case is closed: its contact is read through the archive (HQ and auditors).")
CONTACT_NOT_YOURS = N_("Your role does not read customers' contacts on cases.")
CONTACT_REFUSED = N_("Investigation refused to read the contact.")
CONTACT_INTAKE_DOWN = N_("Intake, which holds the customer's contact, is not answering: the contact cannot be "
                         "shown now. Try again in a moment.")
CONTACT_DOWN = N_("Investigation is not answering: the contact cannot be shown now. Try again in a moment.")
NOT_FOUND = N_("There is no such page.")
MAY_NOT_READ = N_("Your role may not see cases.")
CASE_DOWN = N_("The case is not available right now: investigation is not answering. Try again in a moment.")
SAVE_DOWN = N_("Investigation is not answering: nothing was saved. What you typed is kept; try again.")
MOVED_ON = N_("This task is no longer waiting: the case has moved on. It is shown as it is now.")
MAY_NOT_DO = N_("Your role may not complete this task.")
REFUSED = N_("Investigation refused this. See the fields marked.")
SAVED = N_("Saved.")
REQUIRED = N_("Required")
BAD_INSTANT = N_("A date and time, e.g. 2026-11-23 14:05")
BAD_AMOUNT = N_("An amount in CNY, e.g. 5000 or 49.90")


def label(group: str, value) -> str:
    """The msgid of `value` in `group`, or the value itself (data is never looked up)."""
    table = LABELS.get(group, {})
    return table[value] if isinstance(value, str) and value in table else "" if value is None else str(value)


# -- the forms ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    name: str
    kind: str            # text, textarea, select, checkbox, datetime, amount, staff, list, hidden
    label: str           # msgid
    required: bool = False
    options: tuple = ()  # (value, msgid) for a select
    hint: str | None = None


def _options(labels: dict, values=None) -> tuple:
    return tuple((v, labels[v]) for v in (values or labels))


NOTE = Field("note", "textarea", N_("Note"))
# The standard answers offered (standard_answers.py): a choice that fills the form's text area.
ANSWERS = Field("standard_answer", "answers", N_("Standard answers"),
                hint=N_("Ranked by how often their category was complained about lately. Choosing one puts its "
                        "text below, to edit before sending."))
MESSAGE = Field("message", "textarea", N_("What the customer was told"), True)
RESPONSE_CHANNEL = Field("channel", "select", N_("Channel"), True, _options(CHANNELS, RESPONSE_CHANNELS),
                         hint=N_("By SMS, WeChat or email the message is sent to the customer"))
FORMS: dict[str, tuple[Field, ...]] = {
    "assign": (Field("owner", "staff", N_("Owner"), True, hint=N_("The staff member's login")), NOTE),
    "respond": (ANSWERS, MESSAGE, RESPONSE_CHANNEL),
    "acknowledge": (MESSAGE, RESPONSE_CHANNEL),
    "answer": (ANSWERS, Field("message", "textarea", N_("The answer"), True), RESPONSE_CHANNEL),
    "record_findings": (Field("facts", "textarea", N_("Facts"), True),
                        Field("service_log_checked", "checkbox", N_("Service log checked")),
                        Field("product_batch_checked", "checkbox", N_("Product batch checked")),
                        Field("root_cause", "textarea", N_("Root cause"), True),
                        Field("responsibility", "select", N_("Responsibility"), True, _options(RESPONSIBILITIES)),
                        Field("signed_by", "staff", N_("Signed by"), True),
                        Field("signed_at", "datetime", N_("Signed at"), hint=N_("Empty: now"))),
    "propose_remedy": (Field("type", "select", N_("Remedy"), True, _options(REMEDY_TYPES)),
                       Field("amount", "amount", N_("Amount (CNY)"), True, hint=N_("0 for an apology or a free redo")),
                       Field("deadline", "datetime", N_("Promised by"),
                             hint=N_("Empty: the policy's deadline for the remedy, if it has one")),
                       NOTE),
    "approve": (Field("remedy_id", "hidden", ""), NOTE),
    "reject": (Field("remedy_id", "hidden", ""), Field("reason", "textarea", N_("Reason"), True)),
    "fulfil": (NOTE,),
    "notify_customer": (ANSWERS, Field("measures", "textarea", N_("Measures taken"), True),
                        Field("completed_at", "datetime", N_("Completed at"), True),
                        Field("responsible", "staff", N_("Responsible"), True),
                        Field("follow_up", "textarea", N_("Follow-up plan"), True)),
    "open_corrective_action": (Field("action", "textarea", N_("Corrective action"), True),
                               Field("owner", "staff", N_("Owner"), True),
                               Field("due", "datetime", N_("Due"), True)),
    "close_corrective_action": (NOTE,),
    "decide": (Field("decision", "select", N_("Decision"), True, _options(DECISIONS)), NOTE),
    "pass_on": (Field("to", "list", N_("To (staff logins)"), True, hint=N_("Separated by commas")), NOTE),
}
# An open task's forms: the approval is approved or rejected.
ACTIONS = {"approve": ("approve", "reject")}
SUBMIT = {"reject": N_("Reject"), "approve": N_("Approve")}
SERVICE_WORDS = {"Missing data for required field.": REQUIRED, "Field may not be null.": REQUIRED,
                 "Shorter than minimum length 1.": REQUIRED}


def _local_input(instant, zone: ZoneInfo) -> str:
    """An instant as a datetime-local input's value in the branch's zone."""
    instant = rendering.parse_instant(instant) if isinstance(instant, str) else instant
    return instant.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if instant else ""


def _instant(text: str, zone: ZoneInfo) -> str | None:
    """A datetime-local value (or `2026-11-23 14:05`) in the branch's zone -> ISO 8601 with its offset."""
    try:
        local = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        return None
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone)
    return local.isoformat()


def body_from_form(action: str, values: dict, zone: ZoneInfo) -> tuple[dict, dict]:
    """What investigation takes for `action`, from the posted form; and what the console itself
    finds wrong (a number or an instant it cannot read), by field."""
    body, errors = {}, {}
    for f in FORMS[action]:
        given = (values.get(f.name) or "").strip()
        if f.kind == "checkbox":
            body[f.name] = f.name in values and values[f.name] not in ("", "false", "0")
        elif not given:
            continue  # investigation names what is required
        elif f.kind == "datetime":
            instant = _instant(given, zone)
            if instant is None:
                errors[f.name] = [BAD_INSTANT]
            else:
                body[f.name] = instant
        elif f.kind == "amount":
            try:
                amount = float(given.replace(",", "").replace("，", "").replace("¥", ""))
            except ValueError:
                errors[f.name] = [BAD_AMOUNT]
            else:
                body[f.name] = amount
        elif f.kind == "list":
            body[f.name] = [p for p in re.split(r"[,，、;；\s]+", given) if p]
        else:
            body[f.name] = given
    if action == "propose_remedy":
        body.setdefault("currency", "CNY")
    return body, errors


def _service_fields(refused: ServiceRefused, action: str) -> tuple[dict, list[str]]:
    """Investigation's per-field messages: those of the form's fields beside them, the rest
    (e.g. `needed_role`) above the form."""
    names = {f.name for f in FORMS[action] if f.kind != "hidden"}
    beside, above = {}, []
    for name, messages in refused.fields.items():
        shown = [SERVICE_WORDS.get(m, m) for m in messages]
        if name in names:
            beside[name] = shown
        elif name == "needed_role":
            above.extend(f"→ {m}" for m in messages)
        else:
            above.extend(f"{name}: {m}" for m in shown)
    return beside, above


def form_view(action: str, case_id: str, language: str, *, values: dict | None = None,
              errors: dict | None = None, problems: list[str] | None = None, notes: list[str] | None = None,
              defaults: dict | None = None, staff_choices: list | None = None, answers: list | None = None) -> dict:
    """What _case_task.html draws: the action's fields with their values, labels and errors; the
    standard answers offered (`answers`; None: investigation could not say)."""
    text = rendering.translations(language).gettext
    offers = action in standard_answers.TASK_PURPOSES
    values, errors, defaults = values or {}, errors or {}, defaults or {}
    fields = []
    for f in FORMS[action]:
        value = values.get(f.name, defaults.get(f.name, ""))
        fields.append({"name": f.name, "kind": f.kind, "label": text(f.label) if f.label else "",
                       "required": f.required, "value": "" if value is None else str(value),
                       "checked": (f.name in values) if values else bool(defaults.get(f.name)),
                       "options": [(v, text(m)) for v, m in f.options], "hint": text(f.hint) if f.hint else "",
                       "errors": [text(m) if m in _OWN_MESSAGES else m for m in errors.get(f.name, [])],
                       "id": f"{action}-{f.name}"})
    return {"action": action, "case_id": case_id, "title": text(TASKS.get(action, action)),
            "heading": action in ("approve", "reject"),  # else the task's own title says it
            "submit": text(SUBMIT.get(action, N_("Complete"))), "fields": fields,
            "problems": [text(p) if p in _OWN_MESSAGES else p for p in (problems or [])],
            "notes": notes or [], "staff_choices": staff_choices or [], "danger": action == "reject",
            "answers": answers or [],
            "fills": f"{action}-{standard_answers.FILLS[action]}" if offers else "",
            "answers_unavailable": text(standard_answers.UNAVAILABLE) if offers and answers is None else ""}


_OWN_MESSAGES = frozenset((REQUIRED, BAD_INSTANT, BAD_AMOUNT, SAVE_DOWN, MAY_NOT_DO, REFUSED, MOVED_ON))


# -- the case, as the page shows it ----------------------------------------------------------------

def _zone(policy, branch: str | None) -> ZoneInfo:
    b = policy.branches.get(branch) if isinstance(branch, str) and branch else None
    return b.zone if b is not None else ZoneInfo("Asia/Shanghai")


def _may_complete(task: dict, staff, owner: str | None) -> bool:
    """As investigation decides (domain.Case.may_complete), so that only usable forms show; an
    approval's roles are those whose authority covers the remedy."""
    if task.get("system"):
        return False
    roles = task.get("roles") or []
    return staff.role in roles or (bool(task.get("owner_may_complete")) and owner is not None
                                   and staff.login == owner)


def _staff_choices(store, policy, branch: str | None) -> list[tuple[str, str]]:
    """The console's active staff whose scope covers the branch: suggestions for an owner,
    a signer, a responsible person (any staff id may still be typed)."""
    b = policy.branches.get(branch) if isinstance(branch, str) and branch else None
    s = models.staff.c
    covers = [s.scope_kind == "all"]
    if b is not None:
        covers += [sa.and_(s.scope_kind == "branch", s.scope_value == b.code),
                   sa.and_(s.scope_kind == "region", s.scope_value == b.region)]
    try:
        with store.unit_of_work() as uow:
            rows = uow.execute(sa.select(s.login, s.display_name).where(s.active, sa.or_(*covers))
                               .order_by(s.login).limit(200)).all()
    except Exception:  # noqa: BLE001 - suggestions only: the form works without them
        log.warning("staff suggestions unavailable", exc_info=True)
        return []
    return [(r.login, r.display_name) for r in rows]


def _defaults(action: str, case: dict, staff, zone: ZoneInfo, now: datetime) -> dict:
    remedy = case.get("_awaiting")
    owner = case.get("owner") or staff.login
    return {"signed_by": staff.login, "responsible": owner, "owner": case.get("owner") if action == "open_corrective_action"
            else "", "completed_at": _local_input(now, zone), "channel": "phone",
            "remedy_id": remedy["id"] if remedy else ""}


def _pick(given, *keys) -> dict | None:
    """A dict of the service's answer with exactly `keys` (missing ones empty), or None: the
    templates are strict about what they read."""
    if not isinstance(given, dict) or not given:
        return None
    return {k: ("" if given.get(k) is None else given.get(k)) for k in keys}


def _duration(seconds: float, language: str) -> str:
    """`1天2小时5分` / `1d 2h 5m` (format_remaining's words without "left")."""
    if not seconds:
        return ""
    words = rendering.format_remaining(seconds, language)
    return words.removeprefix("剩余 ").removesuffix(" left")


_DETAIL_LABELS = {"channel": CHANNELS, "responsibility": RESPONSIBILITIES, "type": REMEDY_TYPES,
                  "status": REMEDY_STATUSES, "decision": DECISIONS, "role": ROLE_LABELS, "to_role": ROLE_LABELS,
                  "kind": KINDS, "from_kind": KINDS, "category": CATEGORIES, "outcome": OUTCOMES,
                  "state": STATES, "priority": rendering.PRIORITY_LABELS}


def _detail_items(detail, case_zone: ZoneInfo, language: str) -> list[tuple[str, str]]:
    """A timeline entry's detail as (key, text) pairs; instants in the branch's zone, known
    codes in words. A detail within (what a converted inquiry was: `from`) is its own pairs,
    "key: text" each, those without a value left out."""
    if not isinstance(detail, dict):
        return []
    items = []
    for key, value in detail.items():
        if key in ("remedy_id", "request_event_id", "visit_id"):
            continue
        known = _DETAIL_LABELS.get(key, {})
        if isinstance(value, str) and value in known:
            value = rendering.gettext(language, known[value])
        elif isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
            value = rendering.format_instant(value, case_zone, language)
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        elif isinstance(value, bool):
            value = "✓" if value else "✗"
        elif isinstance(value, dict):
            value = "; ".join(f"{inner}: {text}" for inner, text in _detail_items(value, case_zone, language) if text)
        items.append((str(key), "" if value is None else str(value)))
    return items


def case_view(case: dict, *, staff, language: str, policy, now: datetime, forms: dict | None = None,
              staff_choices: list | None = None, answers: dict | None = None) -> dict:
    """The case as the template draws it: labels translated, instants in the branch's zone,
    the forms of the open tasks the staff member may complete (`forms`: one drawn again with
    what was typed and what was refused; `answers`: the standard answers each form offers)."""
    text = rendering.translations(language).gettext
    zone = _zone(policy, case.get("branch_code"))
    when = lambda instant: rendering.format_instant(instant, zone, language)  # noqa: E731
    name = lambda group, value: text(label(group, value)) if value in LABELS[group] else ("" if value is None else str(value))  # noqa: E731,E501
    remedies = [r for r in case.get("remedies") or [] if isinstance(r, dict)]
    awaiting = next((r for r in reversed(remedies) if r.get("status") == "awaiting_approval"), None)
    case = {**case, "_awaiting": awaiting}
    paused = case.get("waiting_for_customer") or None

    clocks = []
    sla = case.get("sla") if isinstance(case.get("sla"), dict) else {}
    for clock_name, clock in sorted(sla.items(), key=lambda kv: list(CLOCKS).index(kv[0]) if kv[0] in CLOCKS else 9):
        if not isinstance(clock, dict):
            continue
        remaining = rendering.number(clock.get("remaining_seconds"), None)
        running = clock.get("stopped_at") is None
        clocks.append({"name": name("clock", clock_name), "state": clock.get("state") or "",
                       "state_label": name("clock_state", clock.get("state")), "due": when(clock.get("due")),
                       "due_iso": clock.get("due") or "", "running": running, "paused": bool(clock.get("paused")),
                       "remaining": rendering.format_remaining(remaining, language) if remaining is not None else "",
                       "stopped": when(clock.get("stopped_at")), "breach_level": rendering.integer(clock.get("breach_level")),
                       "paused_for": _duration(rendering.number(clock.get("paused_seconds")), language)})

    timeline = [{"at": when(e.get("at")), "at_iso": e.get("at") or "", "actor": e.get("actor") or "",
                 "role": name("role", e.get("role")) if e.get("role") else "", "what": name("event", e.get("what")),
                 "detail": _detail_items(e.get("detail"), zone, language)}
                for e in case.get("timeline") or [] if isinstance(e, dict)]

    shown_remedies = [{"type": name("remedy", r.get("type")), "amount": f"{rendering.number(r.get('amount')):,.2f}",
                       "status": r.get("status") or "", "status_label": name("remedy_status", r.get("status")),
                       "proposed_by": r.get("proposed_by") or "", "proposed_role": name("role", r.get("proposed_role")),
                       "proposed_at": when(r.get("proposed_at")), "note": r.get("note") or "",
                       "approvers": ", ".join(name("role", a) for a in r.get("approvers") or []),
                       "decided_by": r.get("decided_by") or "", "decided_at": when(r.get("decided_at")),
                       "reason": r.get("reason") or "", "deadline": when(r.get("deadline")),
                       "deadline_iso": r.get("deadline") or "", "fulfilled_at": when(r.get("fulfilled_at")),
                       "promise": r.get("promise") or "", "promise_label": name("promise", r.get("promise"))
                       if r.get("promise") else ""} for r in remedies]

    tasks, choices = [], staff_choices or []
    for task in case.get("open_tasks") or []:
        if not isinstance(task, dict):
            continue
        mine = _may_complete(task, staff, case.get("owner"))
        due = rendering.parse_instant(task.get("due"))
        entry = {"name": str(task.get("name") or ""), "title": name("task", task.get("name")),
                 "due": when(task.get("due")), "due_iso": task.get("due") or "", "mine": mine,
                 "remaining": rendering.format_remaining((due - now).total_seconds(), language) if due else "",
                 "who": ", ".join(name("role", r) for r in task.get("roles") or []),
                 "owner_too": bool(task.get("owner_may_complete")), "system": bool(task.get("system")), "forms": []}
        if mine:
            for action in ACTIONS.get(entry["name"], (entry["name"],)):
                if action not in FORMS:
                    continue
                given = (forms or {}).get(action) or {}
                notes = []
                if action == "approve" and awaiting:
                    notes.append(text(N_("%(type)s of %(amount)s CNY proposed by %(who)s")) % {
                        "type": name("remedy", awaiting.get("type")),
                        "amount": f"{rendering.number(awaiting.get('amount')):,.2f}",
                        "who": awaiting.get("proposed_by") or ""})
                entry["forms"].append(form_view(action, case["id"], language, values=given.get("values"),
                                                errors=given.get("errors"), problems=given.get("problems"),
                                                notes=notes, defaults=_defaults(action, case, staff, zone, now),
                                                staff_choices=choices, answers=(answers or {}).get(action)))
        tasks.append(entry)

    findings = _pick(case.get("findings"), "facts", "root_cause", "responsibility", "signed_by", "signed_at",
                     "service_log_checked", "product_batch_checked")
    if findings:
        findings.update(responsibility_label=name("responsibility", findings["responsibility"]),
                        signed_at=when(findings["signed_at"]))
    first = _pick(case.get("first_response"), "message", "channel", "by", "at")
    if first:
        first.update(channel=name("channel", first["channel"]), at=when(first["at"]))
    written = _pick(case.get("written_result"), "measures", "completed_at", "responsible", "follow_up")
    if written:
        written.update(completed_at=when(written["completed_at"]))
    action = _pick(case.get("corrective_action"), "action", "owner", "due", "status", "done_at")
    if action:
        action.update(due=when(action["due"]), done_at=when(action["done_at"]))
    decision = case.get("decision") or None
    if decision:
        decision = {"decision": name("decision", decision.get("decision")), "note": decision.get("note") or "",
                    "to": ", ".join(map(str, decision.get("to") or [])), "by": decision.get("by") or "",
                    "at": when(decision.get("at"))}
    level = max(0, rendering.integer(case.get("escalation_level")))
    rules = policy.sections.get("investigation")
    ladder = getattr(rules, "escalation", None) or ("store_manager", "regional_manager", "hq_admin")
    escalation = rendering.ROLE_LABELS.get(ladder[min(level, len(ladder) - 1)], "") if level else ""
    customer = case.get("customer") if isinstance(case.get("customer"), dict) else {}
    masked = customer.get("masked") if isinstance(customer.get("masked"), dict) else {}
    service = _pick(case.get("service"), "code", "name", "technician_id")
    return {
        "id": str(case.get("id") or ""), "reference": str(case.get("reference") or ""),
        "kind": name("kind", case.get("kind")), "state": case.get("state") or "",
        "state_label": name("state", case.get("state")), "priority": case.get("priority") or "",
        "category": name("category", case.get("category")), "channel": name("channel", case.get("channel")),
        "branch_code": case.get("branch_code") or "", "owner": case.get("owner") or "",
        "description": case.get("description") or "", "severity_flags": ", ".join(map(str, case.get("severity_flags") or [])),
        "service": service, "products": [_pick(p, "sku", "name", "batch") for p in case.get("products") or [] if isinstance(p, dict)],
        "received_at": when(case.get("received_at")), "closed_at": when(case.get("closed_at")),
        "resolved_at": when(case.get("resolved_at")), "overdue": bool(case.get("overdue")),
        "escalation_level": level, "escalated_to": text(escalation) if escalation else "",
        "reopened": rendering.integer(case.get("reopened")), "outcome": name("outcome", case.get("outcome")),
        "kind_code": str(case.get("kind") or ""), "converted_from": name("kind", case.get("converted_from"))
        if case.get("converted_from") else "", "converted_at": when(case.get("converted_at")),
        "paused": {"since": when(paused.get("since")), "reason": paused.get("reason") or ""} if paused else None,
        "customer": {"name": masked.get("name") or "", "phone": masked.get("phone") or "",
                     "language": customer.get("language") or ""},
        "contact_on_request": case.get("state") != "closed" and getattr(staff, "role", None) in CONTACT_ROLES,
        "clocks": clocks, "timeline": timeline, "remedies": shown_remedies, "tasks": tasks, "findings": findings,
        "first_response": first, "written_result": written, "corrective_action": action, "decision": decision,
    }


# -- the pages -------------------------------------------------------------------------------------

def _token(caller, tokens) -> str:
    return tokens.for_session(caller.session.id_hash, caller.staff)


def _case_path(case_id: str) -> str:
    return f"/cases/{case_id}"


def _read_case(services, token: str, case_id: str) -> dict:
    """The case from investigation; its refusals as the console's pages (404, 403), a service
    away as ServiceDown."""
    if not _CASE_ID.match(case_id):
        raise web.PageError(404, NOT_FOUND)
    try:
        return services.investigation.get(f"/v1/cases/{case_id}", token)
    except ServiceRefused as refused:
        if refused.status in (400, 404):
            raise web.PageError(404, NOT_FOUND) from None
        if refused.status == 403:
            raise web.PageError(403, MAY_NOT_READ) from None
        log.warning("investigation refused case %s: %s", case_id, refused)
        raise ServiceDown("investigation", f"answered {refused.status}") from None


def _render_case(request, caller, case: dict, *, store, services, tokens, policy, now, status: int = 200,
                 partial: bool = False, forms: dict | None = None, notice: str | None = None,
                 problem: str | None = None, contact: dict | None = None, convert: dict | None = None,
                 converted: bool = False) -> Response:
    """The case's page (`partial`: its part alone, for htmx): the forms of the tasks the staff
    member may complete with the standard answers they offer; the whole page also with the
    customer's summary from reporting (left out when reporting is slow or away)."""
    mine = [t for t in case.get("open_tasks") or [] if isinstance(t, dict)
            and _may_complete(t, caller.staff, case.get("owner"))]
    token = _token(caller, tokens)
    customer = case.get("customer") if isinstance(case.get("customer"), dict) else {}
    # The customer's file (reporting) is read while the answers (investigation) are.
    file = None if partial else eventlet.spawn(customer_summary.read_aside, caller.staff, services, token,
                                               customer.get("ref"))
    choices = _staff_choices(store, policy, case.get("branch_code")) if mine else []
    answers = standard_answers.for_case(case, [str(t.get("name")) for t in mine], services, token, policy=policy,
                                        language=caller.language)
    view = case_view(case, staff=caller.staff, language=caller.language, policy=policy, now=now, forms=forms,
                     staff_choices=choices, answers=answers)
    context = dict(case=view, now_iso=now.isoformat(), notice=notice, problem=problem, here=_case_path(view["id"]),
                   contact=contact or contact_view(view["id"], caller.language),
                   convert=convert or convert_view(case, caller.staff, caller.language, policy, converted=converted))
    if partial:
        template = "_case.html"
    else:
        template = "case.html"
        context.update(summary=customer_summary.line(file.wait(), caller.language, this_case=view["id"]),
                       converted=_converted_notice(view, caller.language) if converted else "")
    response = web.html(request, caller, template, status=status, **context)
    response.headers["Vary"] = "HX-Request, Cookie"
    return response


def case_page(store, request, case_id: str, *, services, tokens, policy, now: datetime) -> Response:
    """GET /cases/{id}: the page (an htmx request: the case's part alone). `?converted=1`: back
    from converting the inquiry (intake's), which investigation takes over a moment later."""
    caller = web.open_caller(store, request, now)
    try:
        case = _read_case(services, _token(caller, tokens), case_id)
    except ServiceDown as down:
        log.warning("case %s unavailable: %s", case_id, down)
        raise web.PageError(503, CASE_DOWN) from None
    done = request.args.get("done")
    notice = SAVED if done in FORMS else None
    return _render_case(request, caller, case, store=store, services=services, tokens=tokens, policy=policy, now=now,
                        partial=web.is_htmx(request), notice=notice, converted=request.args.get("converted") == "1")


def complete_task(store, request, case_id: str, action: str, *, services, tokens, policy, now: datetime) -> Response:
    """POST /cases/{id}/tasks/{task}: investigation's task completed with the form's data. Done:
    the case again (htmx) or 303 to its page. Refused: the form again with each message beside
    its field. Investigation away: the form again with what was typed."""
    values = web.form(request)
    caller = web.open_caller(store, request, now, values=values)
    if action not in FORMS or not _CASE_ID.match(case_id):
        raise web.PageError(404, NOT_FOUND)
    values = {k: v for k, v in values.items() if k != "csrf_token"}
    token = _token(caller, tokens)
    htmx = web.is_htmx(request)
    deps = dict(store=store, services=services, tokens=tokens, policy=policy, now=now)
    # The branch's zone for the typed instants: the case's, read first (its 404 is the page's).
    try:
        case = _read_case(services, token, case_id)
    except ServiceDown:
        return _form_again(request, caller, action, case_id, values, {}, [SAVE_DOWN], status=503)
    zone = _zone(policy, case.get("branch_code"))
    body, errors = body_from_form(action, values, zone)
    if errors:
        return _refused(request, caller, case, action, values, errors, [], **deps)
    try:
        case = services.investigation.post(f"/v1/cases/{case_id}/tasks/{action}", token, body)
    except ServiceDown as down:
        log.warning("task %s of case %s not saved: %s", action, case_id, down)
        return _form_again(request, caller, action, case_id, values, {}, [SAVE_DOWN], status=503)
    except ServiceRefused as refused:
        if refused.status == 404:
            raise web.PageError(404, NOT_FOUND) from None
        if refused.status == 409:
            try:
                case = _read_case(services, token, case_id)
            except ServiceDown:
                return _form_again(request, caller, action, case_id, values, {}, [MOVED_ON], status=409)
            return _render_case(request, caller, case, **deps, partial=htmx, status=200 if htmx else 409,
                                problem=MOVED_ON)
        beside, above = _service_fields(refused, action)
        problems = [MAY_NOT_DO if refused.status == 403 else REFUSED]
        if refused.message:
            problems.append(refused.message)
        return _refused(request, caller, case, action, values, beside, problems + above, **deps, status=refused.status)
    if htmx:
        return _render_case(request, caller, case, **deps, partial=True, notice=SAVED)
    return web.redirect(request, caller, f"{_case_path(case_id)}?done={action}")


def _refused(request, caller, case: dict, action: str, values: dict, errors: dict, problems: list, *, store,
             services, tokens, policy, now, status: int = 400) -> Response:
    """The refused form with what was typed: alone for htmx (swapped in place of the form), else
    the whole page with it."""
    if web.is_htmx(request):
        answers = standard_answers.for_case(case, [action], services, _token(caller, tokens), policy=policy,
                                            language=caller.language)
        return _form_again(request, caller, action, case["id"], values, errors, problems, status=status,
                           choices=_staff_choices(store, policy, case.get("branch_code")), answers=answers.get(action))
    forms = {action: {"values": values, "errors": errors, "problems": problems}}
    return _render_case(request, caller, case, store=store, services=services, tokens=tokens, policy=policy, now=now,
                        status=status, forms=forms)


def _form_again(request, caller, action: str, case_id: str, values: dict, errors: dict, problems: list, *,
                status: int, choices: list | None = None, answers: list | None = None) -> Response:
    """The one form, as typed, with its messages; a page of its own without htmx. htmx swaps
    only 2xx answers: it gets 200 and is retargeted at the form."""
    form = form_view(action, case_id, caller.language, values=values, errors=errors, problems=problems,
                     staff_choices=choices, answers=answers)
    if web.is_htmx(request):
        response = web.html(request, caller, "_case_task.html", form=form)
        response.headers["HX-Retarget"] = f"#form-{action}"
        response.headers["HX-Reswap"] = "outerHTML"
        return response
    return web.html(request, caller, "case_form.html", status=status, form=form, here=_case_path(case_id))


# -- an inquiry converted into a complaint (intake's), investigation following ----------------------

CONVERT_ROLES = frozenset({"front_desk", "investigator", "store_manager", "regional_manager", "hq_admin"})
CONVERT_REFUSED = N_("Intake refused to convert the inquiry. See the fields marked.")
CONVERT_NOT_YOURS = N_("Your role may not convert an inquiry into a complaint.")
CONVERT_NOT_INQUIRY = N_("This is no longer an inquiry: it was converted already.")
CONVERT_CLOSED = N_("The inquiry's case is closed: it can no longer be converted.")
CONVERT_DOWN = N_("Intake is not answering: the inquiry was not converted. Try again in a moment.")
CONVERTED = N_("Converted into a complaint: its deadlines count from %(received)s, when the inquiry was received.")
CONVERTING = N_("Investigation takes the complaint over in a moment: reload the page to see its tasks.")
_CONVERT_FIELDS = ("category", "severity_flags", "note")


def convert_view(case: dict, staff, language: str, policy, *, values: dict | None = None,
                 errors: dict | None = None, problems: list | None = None, converted: bool = False) -> dict | None:
    """The "convert into a complaint" form of an open inquiry, for a role that may (intake's
    complaint:convert); None for any other case (or just converted: intake would refuse it)."""
    if (case.get("kind") != "inquiry" or case.get("state") == "closed" or converted
            or getattr(staff, "role", None) not in CONVERT_ROLES):
        return None
    text = rendering.translations(language).gettext
    given = case.get("severity_flags") if isinstance(case.get("severity_flags"), list) else []
    flagged = {flag for flag in FLAGS if (flag in given if values is None else values.get(f"flag.{flag}"))}
    values, errors = values or {}, errors or {}
    category = values.get("category", case.get("category") or "")
    return {"case_id": str(case.get("id") or ""), "category": category,
            "categories": [(code, standard_answers.category_label(policy, code, language))
                           for code in (getattr(policy.sections.get("intake"), "categories", {}) or {})],
            "flags": [(flag, text(FLAG_LABELS[flag]), flag in flagged) for flag in FLAGS],
            "note": values.get("note", ""), "errors": {k: v for k, v in errors.items() if k in _CONVERT_FIELDS},
            "problems": list(problems or []) + [f"{k}: {'; '.join(v)}" for k, v in errors.items()
                                                if k not in _CONVERT_FIELDS]}


def _converted_notice(view: dict, language: str) -> str:
    text = rendering.translations(language).gettext
    notice = text(CONVERTED) % {"received": view["received_at"]}
    return notice + (" " + text(CONVERTING) if view["kind_code"] == "inquiry" else "")


def convert(store, request, case_id: str, *, services, tokens, policy, now: datetime) -> Response:
    """POST /cases/{id}/convert: the inquiry converted into a complaint by intake
    (`POST /v1/complaints/{id}/convert` with the staff member's token: a category, severity
    flags, a note), then 303 to the case (`?converted=1`), which investigation converts a moment
    later. Refused: the page again with intake's reasons beside the form's fields."""
    values = web.form(request)
    caller = web.open_caller(store, request, now, values=values)
    if not _CASE_ID.match(case_id):
        raise web.PageError(404, NOT_FOUND)
    text = rendering.translations(caller.language).gettext
    # The flags as the form shows them (the inquiry's ticked to begin with), always sent: one
    # unticked is not the complaint's (left out, intake would keep the inquiry's).
    body = {"category": (values.get("category") or "").strip() or None,
            "severity_flags": [flag for flag in FLAGS if values.get(f"flag.{flag}")],
            "note": (values.get("note") or "").strip() or None}
    token = _token(caller, tokens)
    errors, details = {}, []
    try:
        services.intake.post(f"/v1/complaints/{case_id}/convert", token,
                             {k: v for k, v in body.items() if v is not None},
                             correlation_id=request.environ.get("closeloop.correlation_id"))
    except ServiceDown as down:
        log.warning("inquiry %s not converted: %s", case_id, down)
        problem, status = CONVERT_DOWN, 503
    except ServiceRefused as refused:
        if refused.status == 404:
            raise web.PageError(404, NOT_FOUND) from None
        status = refused.status
        if refused.status == 403:
            problem = CONVERT_NOT_YOURS
        elif refused.status == 409:
            problem = CONVERT_CLOSED if refused.code == "closed" else CONVERT_NOT_INQUIRY
            details = [refused.message] if refused.message else []
        else:
            errors = {name: [text(SERVICE_WORDS[m]) if m in SERVICE_WORDS else m for m in messages]
                      for name, messages in refused.fields.items()}
            problem, details = CONVERT_REFUSED, [refused.message] if refused.message and not errors else []
    else:
        return web.redirect(request, caller, f"{_case_path(case_id)}?converted=1")
    try:
        case = _read_case(services, token, case_id)
    except ServiceDown:
        raise web.PageError(503, CASE_DOWN) from None
    form = convert_view(case, caller.staff, caller.language, policy, values=values, errors=errors,
                        problems=[text(problem)] + details)
    # No form to show it in (the case is no inquiry any more, or closed): the case's own message.
    return _render_case(request, caller, case, store=store, services=services, tokens=tokens, policy=policy, now=now,
                        status=status, convert=form, problem=None if form else problem)


# -- the customer's contact, on request, with a purpose ----------------------------------------------

def contact_view(case_id: str, language: str, *, choice: str = "call_back", purpose: str = "",
                 errors: list | None = None, problems: list | None = None, shown: dict | None = None) -> dict:
    """What _case_contact.html draws: the form (the purposes offered, what was typed, the
    messages beside the purpose and above the form), or the contact read just now."""
    text = rendering.translations(language).gettext
    return {"case_id": case_id, "choice": choice if choice in CONTACT_PURPOSES or choice == "" else "call_back",
            "purpose": purpose, "purposes": [(key, text(msgid)) for key, msgid in CONTACT_PURPOSES.items()],
            "errors": errors or [], "problems": problems or [], "shown": shown}


def _purpose(values: dict, language: str) -> str:
    """The purpose as logged: the staff member's own words, else the chosen purpose in their language."""
    own = (values.get("purpose") or "").strip()
    if own:
        return own
    choice = values.get("purpose_choice") or ""
    return rendering.gettext(language, CONTACT_PURPOSES[choice]) if choice in CONTACT_PURPOSES else ""


def show_contact(store, request, case_id: str, *, services, tokens, policy, now: datetime) -> Response:
    """POST /cases/{id}/contact: the customer's contact read now through investigation
    (`GET /v1/cases/{id}/contact?purpose=`; intake logs the read). With htmx the contact part
    alone (200 whatever happened: htmx swaps 2xx only), else the whole page with it. Kept
    nowhere. Refusals beside the purpose field; intake or investigation away: a clear message."""
    values = web.form(request)
    caller = web.open_caller(store, request, now, values=values)
    if not _CASE_ID.match(case_id):
        raise web.PageError(404, NOT_FOUND)
    text = rendering.translations(caller.language).gettext
    typed = {"choice": values.get("purpose_choice") or "", "purpose": values.get("purpose") or ""}
    purpose = _purpose(values, caller.language)
    errors, problems, shown, status = [], [], None, 200
    if not purpose:
        errors, status = [text(REQUIRED)], 400
    else:
        try:
            answer = services.investigation.get(f"/v1/cases/{case_id}/contact", _token(caller, tokens),
                                                purpose=purpose)
        except ServiceDown as down:
            log.warning("contact of case %s not read: %s", case_id, down)
            # Investigation answers 503 on this route when intake, the contact holder, does not answer.
            intake_away = down.why.startswith("answered 503")
            problems, status = [text(CONTACT_INTAKE_DOWN if intake_away else CONTACT_DOWN)], 503
        except ServiceRefused as refused:
            if refused.status == 404:
                raise web.PageError(404, NOT_FOUND) from None
            status = refused.status
            if refused.status == 409:
                problems = [text(CONTACT_CLOSED)]
            elif refused.status == 403:
                problems = [text(CONTACT_NOT_YOURS)]
            else:
                errors = [SERVICE_WORDS.get(m, m) for m in refused.fields.get("purpose", [])]
                errors = [text(m) if m == REQUIRED else m for m in errors]
                problems = [text(CONTACT_REFUSED)] + [f"{name}: {'; '.join(m)}" for name, m in refused.fields.items()
                                                      if name != "purpose"]
                if not errors and not problems[1:] and refused.message:
                    problems.append(refused.message)
        else:
            found = answer.get("contact") if isinstance(answer.get("contact"), dict) else {}
            shown = {"name": str(found.get("name") or ""), "phone": str(found.get("phone") or ""),
                     "email": str(found.get("email") or ""), "purpose": str(answer.get("purpose") or purpose)}
    view = contact_view(case_id, caller.language, choice=typed["choice"], purpose=typed["purpose"], errors=errors,
                        problems=problems, shown=shown)
    if web.is_htmx(request):
        response = web.html(request, caller, "_case_contact.html", contact=view)
    else:
        try:
            case = _read_case(services, _token(caller, tokens), case_id)
        except ServiceDown:
            raise web.PageError(503, CASE_DOWN) from None
        response = _render_case(request, caller, case, store=store, services=services, tokens=tokens, policy=policy,
                                now=now, status=status, contact=view)
    response.headers["Cache-Control"] = "no-store"
    return response
