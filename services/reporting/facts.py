"""Reporting's domain, first part (issue 11 groundwork, not wired): what the events say about one
case, folded into its facts, the row a KPI reads. Plain Python: no ORM, no framework.

A case's facts come from three producers: intake (the complaint as registered), investigation
(the case: its clocks, remedies, outcome) and aftercare (the follow-up's score). Events may come
in any order and more than once (a retried delivery, a replay):
- every fold is idempotent: values come from the payload (a level, a count, an id), never from
  counting arrivals;
- what only grows keeps its largest value (escalation level, times reopened, breach levels);
- what happens once keeps its first instant (the first response) and what may happen again its
  latest (the last resolution), by the event's time;
- what changes (the state, the owner, the findings, a moved deadline) is what the newest
  investigation event about it said: the envelope's `sequence` numbers a producer's events about
  one record, so a case_resolved heard after the case_closed it led to does not reopen it;
- intake's registration and investigation's case_opened both describe the complaint: intake's
  wins, as the record's source, whichever came first.
No contact data: the events carry `customer_ref` and masks only, and the facts keep the ref.
Free text (the description, the findings, the measures, the corrective action: the case
library's) is kept scrubbed only (scrub.py), with the customer's surname once the mask is known.

An inquiry converted into a complaint (intake's complaint_registered with `converted_from`,
investigation's case_converted) is a complaint from then on, whichever event comes first: the
inquiry's registration heard after its conversion only fills what is still unknown. Investigation
converts an inquiry in place whatever its state: one already answered and closed opens again, and
its answer is the inquiry's, not the complaint's first response. Which is which is told by the
case's sequence: the acknowledgements and the closing numbered before case_converted are the
inquiry's, in whatever order they are heard (`responses` keeps each acknowledgement by its number).

The staff a case's events name (who acted, signed the findings, owns the case or its corrective
action, the technician) are kept (`staff`): the case library takes their ids out of its texts."""
from __future__ import annotations

from datetime import datetime

from services.reporting.scrub import scrub_text

# The state each investigation event leaves the case in.
STATE_OF = {"case_opened": "open", "case_converted": "open", "case_assigned": "assigned",
            "case_acknowledged": "acknowledged",
            "findings_recorded": "investigated", "case_resolved": "resolved", "case_reopened": "reopened",
            "case_closed": "closed"}
# What the complaint as registered says, in the record's own words (intake's, else case_opened's).
_DESCRIBED = ("kind", "reference", "category", "priority", "region", "received_at", "first_response_due",
              "resolution_due", "customer_ref", "customer_masked", "severity_flags")


def case_of(event: dict) -> str | None:
    """The case an event is about, if it is about one: a complaint's registration (the case's id
    is the complaint's), a case's own events, a follow-up's visit events."""
    source, payload = event["source"], event["payload"]
    if source == "intake" and event["type"] in ("complaint_registered", "feedback_registered"):
        return payload.get("complaint_id")
    if source == "investigation":
        return payload.get("case_id")
    if source == "aftercare" and payload.get("kind") == "follow_up":
        return payload.get("case_id")
    return None


def new_case(case_id: str) -> dict:
    return {"case_id": case_id, "branch_code": None, "kind": None, "reference": None, "category": None,
            "priority": None, "channel": None, "region": None, "severity_flags": [], "customer_ref": None,
            "technician_id": None, "service_code": None, "customer_masked": None, "batches": [], "received_at": None,
            "first_response_due": None, "resolution_due": None, "opened_at": None, "owner": None,
            "first_response_at": None, "first_response_within_sla": None, "breaches": {}, "escalation_level": 0,
            "responsibility": None, "remedies": {}, "resolved_at": None, "resolved_within_sla": None,
            "reopened": 0, "closed_at": None, "outcome": None, "corrective_action": None,
            "decision": None, "follow_up_score": None, "follow_up_at": None, "origin": None,
            "state": None, "described_by": None, "sequences": {}, "products": [], "converted_from": None,
            "converted_at": None, "texts": {}, "standard_answers": {}, "responses": {}, "converted_seq": None,
            "staff": []}


def _later(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if datetime.fromisoformat(a) >= datetime.fromisoformat(b) else b


def _earlier(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if datetime.fromisoformat(a) <= datetime.fromisoformat(b) else b


def apply(facts: dict, event: dict) -> dict:
    """The facts after `event` (a parsed envelope about this case); `facts` is left as it was."""
    facts = _copied(facts)
    source, kind, payload = event["source"], event["type"], event["payload"]
    at, sequence = event["occurred_at"], event.get("sequence") or 0
    facts["branch_code"] = facts["branch_code"] or event.get("branch_code")

    if source == "intake" and kind in ("complaint_registered", "feedback_registered"):
        converted = payload.get("converted_from")
        if facts.get("converted_from") and not converted:
            _fill(facts, payload)  # the inquiry's registration, heard after its conversion
        else:
            _describe(facts, payload, "intake")
        if converted:
            facts["converted_from"] = converted
            facts["converted_at"] = _earlier(facts.get("converted_at"), payload.get("converted_at") or at)
        service = payload.get("service") or {}
        facts["channel"] = payload.get("channel")
        facts["technician_id"] = service.get("technician_id")
        facts["service_code"] = service.get("code")
        facts["batches"] = sorted({p["batch"] for p in payload.get("products") or [] if p.get("batch")})
        _add_products(facts, payload.get("products") or [])
        texts = facts.setdefault("texts", {})
        if payload.get("description") is not None:
            texts["description"] = payload["description"]
        _scrub_texts(facts)  # the mask now known: every text scrubbed with the surname
        return facts
    if source == "aftercare":
        if kind == "visit_completed" and payload.get("kind") == "follow_up":
            if facts["follow_up_at"] is None or _later(at, facts["follow_up_at"]) == at:
                facts["follow_up_score"], facts["follow_up_at"] = payload.get("score"), at
        return facts
    if source != "investigation":
        return facts

    _add_staff(facts, payload.get("actor"), payload.get("owner"), payload.get("signed_by"))
    if kind in STATE_OF and _newer(facts, "state", sequence):
        facts["state"] = STATE_OF[kind]
    if kind == "case_opened":
        if facts["described_by"] != "intake":
            _describe(facts, payload, "investigation")
            _scrub_texts(facts)  # a mask it carries: the texts heard before scrubbed with the surname
        facts["opened_at"] = _earlier(facts["opened_at"], at)
        if payload.get("converted_from"):  # opened as the complaint an inquiry became
            facts["converted_from"] = payload["converted_from"]
        if payload.get("origin"):
            origin = payload["origin"]
            facts["origin"] = origin
            if origin.get("type") == "adverse_reaction":  # found on a return visit's call
                facts["channel"] = facts["channel"] or "return_visit"
            facts["technician_id"] = facts["technician_id"] or origin.get("technician_id")
            batch = (origin.get("product") or {}).get("batch")
            if batch and batch not in facts["batches"]:
                facts["batches"] = sorted({*facts["batches"], batch})
            if origin.get("product"):
                _add_products(facts, [origin["product"]])
    elif kind == "case_assigned" and _newer(facts, "owner", sequence):
        facts["owner"] = payload.get("owner")
    elif kind == "case_acknowledged":
        _responses(facts)[str(sequence)] = {"at": at, "within_sla": payload.get("within_sla"),
                                             "standard_answer": payload.get("standard_answer")}
        _first_responses(facts)
    elif kind == "case_converted":
        for name in ("kind", "category", "priority", "severity_flags", "received_at", "first_response_due",
                     "resolution_due"):
            if payload.get(name) is not None and _newer(facts, name, sequence):
                facts[name] = list(payload[name]) if name == "severity_flags" else payload[name]
        facts["converted_from"] = payload.get("from_kind") or "inquiry"
        facts["converted_at"] = _earlier(facts.get("converted_at"), payload.get("converted_at") or at)
        facts["converted_seq"] = max(facts.get("converted_seq") or 0, sequence)
        if _newer(facts, "closed", sequence):  # an inquiry answered and closed: open again as the complaint
            facts["closed_at"], facts["outcome"] = None, None
        _responses(facts)
        _first_responses(facts)
    elif kind == "customer_notified":
        if _newer(facts, "measures", sequence):
            _set_text(facts, "measures", payload.get("measures"))
            _answer_used(facts, "written_result", payload, at)
    elif kind == "sla_breached":
        clock = payload["clock"]
        facts["breaches"][clock] = max(facts["breaches"].get(clock, 0), payload.get("level") or 1)
    elif kind == "case_escalated":
        facts["escalation_level"] = max(facts["escalation_level"], payload["level"])
    elif kind == "sla_resumed":
        for clock, due in (payload.get("due") or {}).items():
            if clock in ("first_response", "resolution") and _newer(facts, f"{clock}_due", sequence):
                facts[f"{clock}_due"] = due
    elif kind == "findings_recorded" and _newer(facts, "responsibility", sequence):
        facts["responsibility"] = payload.get("responsibility")
        _set_text(facts, "findings", payload.get("facts"))
        _set_text(facts, "root_cause", payload.get("root_cause"))
    elif kind in ("remedy_proposed", "remedy_approved", "remedy_rejected", "remedy_fulfilled", "promise_made",
                  "promise_kept", "promise_broken"):
        _remedy(facts, kind, payload)
    elif kind == "case_resolved":
        if facts["resolved_at"] is None or _later(at, facts["resolved_at"]) == at:
            facts["resolved_at"], facts["resolved_within_sla"] = payload.get("resolved_at") or at, \
                payload.get("within_sla")
        facts["reopened"] = max(facts["reopened"], payload.get("reopened") or 0)
    elif kind == "case_reopened":
        facts["reopened"] = max(facts["reopened"], payload.get("reopened") or 1)
        facts["escalation_level"] = max(facts["escalation_level"], payload.get("escalation_level") or 0)
        if payload.get("resolution_due") and _newer(facts, "resolution_due", sequence):
            facts["resolution_due"] = payload["resolution_due"]
    elif kind == "case_closed" and _newer(facts, "closed", sequence):  # not an inquiry's, heard after its conversion
        facts["closed_at"], facts["outcome"] = at, payload.get("outcome")
    elif kind in ("corrective_action_opened", "corrective_action_closed"):
        action = facts["corrective_action"] or {}
        action.update({"due": payload.get("due"), "owner": payload.get("owner")})
        if payload.get("action") is not None and _newer(facts, "action", sequence):
            _set_text(facts, "action", payload["action"])
        if kind == "corrective_action_closed":
            action.update({"done_at": payload.get("done_at"), "on_time": payload.get("on_time")})
        facts["corrective_action"] = action
    elif kind == "suggestion_decided":
        facts["decision"] = payload.get("decision")
    return facts


def alert_keys(facts: dict) -> tuple:
    """What decides where a case counts in recurring-problem alerts."""
    return tuple(facts.get(name) for name in ("kind", "branch_code", "category", "technician_id", "received_at"))


def _copied(record: dict) -> dict:
    """A copy the fold may change (what deepcopy gives, at a fifth of its cost): facts hold JSON
    values nested at most three deep (remedies by id, each a dict)."""
    return {k: ({i: (dict(w) if isinstance(w, dict) else w) for i, w in v.items()} if isinstance(v, dict) else
                list(v) if isinstance(v, list) else v) for k, v in record.items()}


def _newer(facts: dict, name: str, sequence: int) -> bool:
    """Whether an investigation event numbered `sequence` is the newest yet to set `name`."""
    if sequence < facts["sequences"].get(name, -1):
        return False
    facts["sequences"][name] = sequence
    return True


def _fill(facts: dict, payload: dict) -> None:
    """What a registration says that the facts do not know yet."""
    for name in _DESCRIBED:
        if facts.get(name) is None and payload.get(name) is not None:
            facts[name] = list(payload[name]) if name == "severity_flags" else payload[name]
    facts["described_by"] = "intake"


def _add_products(facts: dict, products: list[dict]) -> None:
    """The products a case is about (sku and batch), each once, in one order whatever came first."""
    known = {(p.get("sku"), p.get("batch")) for p in facts.get("products") or []}
    known |= {(p.get("sku"), p.get("batch")) for p in products if p.get("sku") or p.get("batch")}
    facts["products"] = [{"sku": sku, "batch": batch} for sku, batch in sorted(known, key=lambda k: (k[0] or "",
                                                                                                    k[1] or ""))]


def _set_text(facts: dict, name: str, text: str | None) -> None:
    """A free text of the case, kept scrubbed (with the customer's surname when the mask is known)."""
    texts = facts.setdefault("texts", {})
    texts[name] = scrub_text(text, (facts.get("customer_masked") or {}).get("name"))


def _scrub_texts(facts: dict) -> None:
    masked = (facts.get("customer_masked") or {}).get("name")
    texts = facts.setdefault("texts", {})
    for name, text in texts.items():
        texts[name] = scrub_text(text, masked)


def _responses(facts: dict) -> dict:
    """Each acknowledgement by its sequence number (facts folded before they were kept: their
    first response, as one numbered 0)."""
    if "responses" not in facts:
        first, used = facts.get("first_response_at"), (facts.get("standard_answers") or {}).get("first_response")
        facts["responses"] = {} if first is None else {
            "0": {"at": first, "within_sla": facts.get("first_response_within_sla"),
                  "standard_answer": used["id"] if used else None}}
    return facts["responses"]


def _first_responses(facts: dict) -> None:
    """The first response (the earliest acknowledgement after the conversion, if any) and the
    answer it used; an inquiry converted since: its answer (the earliest before), as `inquiry`."""
    converted = facts.get("converted_seq")
    mine, inquiry = [], []
    for number, response in facts["responses"].items():
        when = (datetime.fromisoformat(response["at"]), int(number))
        (inquiry if converted is not None and int(number) < converted else mine).append((when, response))
    first, answered = (min(rs, key=lambda r: r[0])[1] if rs else None for rs in (mine, inquiry))
    facts["first_response_at"] = first["at"] if first else None
    facts["first_response_within_sla"] = first["within_sla"] if first else None
    for purpose, response in (("first_response", first), ("inquiry", answered)):
        _answer_used(facts, purpose, response or {}, response["at"] if response else None)


def _add_staff(facts: dict, *ids) -> None:
    """Staff ids a case's event names, kept once each."""
    named = {i for i in ids if isinstance(i, str) and i}
    if named - set(facts.get("staff") or ()):
        facts["staff"] = sorted({*(facts.get("staff") or ()), *named})


def _answer_used(facts: dict, purpose: str, payload: dict, at: str) -> None:
    """The standard answer (an id of the policy's) the first response or the newest written result
    used, if any."""
    used = facts.setdefault("standard_answers", {})
    if payload.get("standard_answer"):
        used[purpose] = {"id": payload["standard_answer"], "at": at}
    else:
        used.pop(purpose, None)


def _describe(facts: dict, payload: dict, by: str) -> None:
    """The complaint as registered; a deadline investigation has moved since (a pause, a
    reopening) stays as moved."""
    for name in _DESCRIBED:
        if name in facts["sequences"]:
            continue
        if payload.get(name) is not None:
            facts[name] = list(payload[name]) if name == "severity_flags" else payload[name]
    facts["described_by"] = by


# A remedy's status after each of its events, and how far along that is (a later event of an
# earlier stage, heard late, does not undo a later stage).
_REMEDY_STAGE = {"remedy_proposed": 1, "remedy_rejected": 2, "remedy_approved": 2, "promise_made": 3,
                 "remedy_fulfilled": 4, "promise_kept": 4, "promise_broken": 4}


def _remedy(facts: dict, kind: str, payload: dict) -> None:
    remedy = facts["remedies"].setdefault(payload["remedy_id"], {"stage": 0, "promise": None})
    remedy.update({"type": payload["type"], "amount": payload["amount"]})
    if kind in ("promise_kept", "promise_broken"):
        remedy["promise"] = "kept" if kind == "promise_kept" else "broken"
    elif kind == "remedy_fulfilled" and payload.get("promise"):
        remedy["promise"] = payload["promise"]
    if kind == "promise_made" or payload.get("deadline"):
        remedy["deadline"] = payload.get("deadline")
    stage = _REMEDY_STAGE[kind]
    if stage >= remedy["stage"]:
        remedy["stage"] = stage
        remedy["status"] = {"remedy_proposed": payload.get("status"), "remedy_rejected": "rejected",
                            "remedy_approved": "approved", "promise_made": "approved",
                            "remedy_fulfilled": "fulfilled", "promise_kept": "fulfilled",
                            "promise_broken": remedy.get("status") or "approved"}[kind]


# -- visits: a return visit's or a follow-up's facts, folded from aftercare's events --------------

# The status each visit event leaves the visit in (the newest by the visit's sequence wins).
VISIT_STATUS_OF = {"visit_scheduled": "scheduled", "visit_attempted": "in_progress", "visit_completed": "completed",
                   "visit_abandoned": "abandoned", "visit_cancelled": "cancelled"}


def visit_of(event: dict) -> str | None:
    if event["source"] == "aftercare" and event["type"] in (*VISIT_STATUS_OF, "adverse_reaction_reported"):
        return event["payload"].get("visit_id")
    return None


def new_visit(visit_id: str) -> dict:
    return {"visit_id": visit_id, "branch_code": None, "kind": None, "sale_id": None, "case_id": None,
            "due_at": None, "status": None, "attempts": 0, "reached": False, "score": None, "finished_at": None,
            "suggestions": False, "discomfort": False, "adverse_reaction": False, "sequences": {},
            "customer_ref": None, "answers": None, "standard_answer": None}


def apply_visit(visit: dict, event: dict) -> dict:
    """The visit's facts after `event` (an aftercare envelope about it); `visit` is left as it was."""
    visit = _copied(visit)
    kind, payload, at = event["type"], event["payload"], event["occurred_at"]
    visit["branch_code"] = visit["branch_code"] or event.get("branch_code")
    for name in ("kind", "sale_id", "case_id", "customer_ref"):
        visit[name] = visit.get(name) or payload.get(name)
    if kind in ("visit_attempted", "visit_completed") and payload.get("standard_answer"):
        # the newest call's (a completion after the attempt at the same instant)
        used = visit.get("standard_answer")
        mine = {"id": payload["standard_answer"], "at": at, "completed": kind == "visit_completed"}
        when = lambda u: (datetime.fromisoformat(u["at"]), u["completed"], u["id"])  # noqa: E731
        if used is None or when(mine) >= when(used):
            visit["standard_answer"] = mine
    if kind in VISIT_STATUS_OF and _newer(visit, "status", event.get("sequence") or 0):
        visit["status"] = VISIT_STATUS_OF[kind]
    if kind == "visit_scheduled":
        visit["due_at"] = payload["due_at"]
    elif kind == "visit_attempted":
        visit["attempts"] = max(visit["attempts"], payload.get("attempt") or 1)
        visit["reached"] = visit["reached"] or bool(payload.get("reached"))
    elif kind == "visit_completed":
        answers = payload.get("answers") or {}
        visit.update(score=payload.get("score"), reached=True, finished_at=at, answers=dict(answers),
                     suggestions=bool(answers.get("suggestions")), discomfort=bool(answers.get("discomfort")))
    elif kind in ("visit_abandoned", "visit_cancelled"):
        visit["finished_at"] = visit["finished_at"] or at
    elif kind == "adverse_reaction_reported":
        visit["adverse_reaction"] = True
    return visit


# -- the standard answers used, with the satisfaction that followed --------------------------------

VISIT_ANSWER = "visit_follow_up"


def answer_uses(record: dict) -> list[dict]:
    """The standard answers a case's facts (its first response, its newest written result; an
    inquiry's answer) or a visit's facts (its newest call) say were used: rows of answer_uses."""
    if "visit_id" in record:
        used = record.get("standard_answer")
        if not used:
            return []
        return [{"record_id": record["visit_id"], "purpose": VISIT_ANSWER, "standard_answer": used["id"],
                 "branch_code": record.get("branch_code"), "used_at": used["at"],
                 "score": record.get("score") if record.get("status") == "completed" else None}]
    rows = []
    for purpose, used in sorted((record.get("standard_answers") or {}).items()):
        if purpose == "first_response" and record.get("kind") == "inquiry":
            purpose = "inquiry"
        rows.append({"record_id": record["case_id"], "purpose": purpose, "standard_answer": used["id"],
                     "branch_code": record.get("branch_code"), "used_at": used["at"],
                     "score": record.get("follow_up_score")})
    return rows


# -- records that are whole in one event --------------------------------------------------------

def sale_items(event: dict) -> list[dict]:
    """A sale's items (intake's sale_recorded), one row each: services per technician count
    complaints per 100 services."""
    p = event["payload"]
    return [{"sale_id": p["sale_id"], "line": line, "branch_code": event["branch_code"], "sold_at": p["sold_at"],
             "type": item.get("type"), "product_type": item.get("product_type"),
             "technician_id": item.get("technician_id"), "batch": item.get("batch")}
            for line, item in enumerate(p.get("items") or [])]


SALE_ITEM = ("type", "sku", "code", "name", "product_type", "batch", "technician_id")  # what the file shows


def sale(event: dict) -> dict | None:
    """A sale as the customer file shows it (intake's sale_recorded): who (the ref and the mask),
    whether they consented to contact, and its items (None: no sale to show, no time of sale)."""
    p = event["payload"]
    if not p.get("sold_at"):
        return None
    masked = p.get("customer_masked") or {}
    return {"sale_id": p["sale_id"], "branch_code": event["branch_code"], "sold_at": p["sold_at"],
            "customer_ref": p.get("customer_ref"), "customer_masked": {k: masked.get(k) for k in ("name", "phone")},
            "contact_consent": p.get("contact_consent"),
            "items": [{k: item.get(k) for k in SALE_ITEM} for item in p.get("items") or []]}


def adverse_reaction(event: dict) -> dict:
    """One adverse reaction a visit found (aftercare's adverse_reaction_reported): what the
    product safety signal counts across the chain."""
    p = event["payload"]
    product = p.get("product") or {}
    return {"visit_id": p["visit_id"], "sale_id": p.get("sale_id"), "branch_code": event["branch_code"],
            "batch": product.get("batch"), "sku": product.get("sku"), "technician_id": p.get("technician_id"),
            "reported_at": p["reported_at"]}


def archive_access(event: dict) -> dict:
    """One read of a closed case's archive (investigation's archive_accessed), for auditors."""
    p = event["payload"]
    return {"event_id": event["event_id"], "case_id": p["case_id"], "branch_code": event["branch_code"],
            "actor": p.get("actor"), "actor_role": p.get("actor_role"), "purpose": p["purpose"],
            "contact_read": bool(p.get("contact_read")), "accessed_at": p["accessed_at"]}
