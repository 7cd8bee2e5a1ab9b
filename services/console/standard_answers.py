"""The standard answers (标准应答语) a form offers: investigation's
`GET /v1/standard-answers?purpose=&language=&case_id=`, ranked by how often their category was
complained about lately in the staff member's scope (with the count), the text filled with the
case's facts. The form lists them as a choice (`standard_answer`): choosing one puts its text
in the form's text area for the handler to edit (static/standard_answers.js; without script
the texts are listed to copy and the choice is still sent), and the id of the one chosen goes
to the service with the form (investigation's tasks, aftercare's attempts), which record it.

A visit's answers (purpose `visit_follow_up`) are of the category of the case it follows, if
any, and the console fills them itself with the visit's masked name and branch (a visit is not
a case investigation could fill them from).

Answers the service cannot give (down, refused) leave the form as it was: without them."""
from __future__ import annotations

import logging
import string

from services.console import rendering
from services.console.clients import ServiceDown, ServiceRefused
from services.console.rendering import N_

log = logging.getLogger("closeloop.console")

# A case task's form: the purpose of its answers, and the text area a chosen one fills.
TASK_PURPOSES = {"respond": "first_response", "answer": "inquiry", "notify_customer": "written_result"}
FILLS = {"respond": "message", "answer": "message", "notify_customer": "measures"}
VISIT_PURPOSE = "visit_follow_up"
LANGUAGES = ("zh", "en")
PLACEHOLDERS = ("customer", "branch", "reference", "first_response_due", "resolution_due")

COUNT = N_("%(n)s complaints in %(days)s days")
UNAVAILABLE = N_("The standard answers are not available right now: write the answer yourself.")


def customer_language(language) -> str:
    """The language the answers are offered in: the customer's, else Chinese."""
    return language if language in LANGUAGES else "zh"


def category_label(policy, code, language: str) -> str:
    """A category as the chain's policy names it, in the page's language (the code when unknown)."""
    rules = policy.sections.get("intake")
    found = (getattr(rules, "categories", {}) or {}).get(code) if isinstance(code, str) else None
    if found is None:
        return "" if code is None else str(code)
    return found.label_zh if language == "zh" else found.label_en


def fill(text: str, facts: dict) -> str:
    """An answer's text (a template: {{ and }} are literal braces) with the placeholders the
    console knows the value of put in, the others left for the handler as {name}; a text that is
    no template (investigation's policy check lets none through) as it is."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        return text
    filled = []
    for literal, name, _, _ in parts:
        filled.append(literal)
        if name is not None:
            filled.append(str(facts[name]) if name in PLACEHOLDERS and facts.get(name) else "{" + name + "}")
    return "".join(filled)


def offered(services, token: str, *, purpose: str, language: str, policy, page_language: str,
            case_id: str | None = None, category: str | None = None, facts: dict | None = None,
            timeout: float | None = None) -> list[dict] | None:
    """The answers as a form lists them, best ranked first; None when investigation cannot say
    (within `timeout` s, when given: a page whose own record is another service's)."""
    try:
        answer = services.investigation.get("/v1/standard-answers", token, timeout=timeout, purpose=purpose,
                                            language=customer_language(language), case_id=case_id,
                                            category=category)
    except (ServiceDown, ServiceRefused) as failed:
        log.warning("standard answers (%s) not offered: %s", purpose, failed)
        return None
    days = rendering.integer(answer.get("window_days"), 90)
    count = rendering.gettext(page_language, COUNT)
    shown = []
    for item in rendering.objects(answer.get("answers")):
        if not item.get("id"):
            continue
        # Filled by investigation (a case's), else the template, filled here with what the console knows.
        text = item.get("filled") if isinstance(item.get("filled"), str) else fill(str(item.get("text") or ""),
                                                                                  facts or {})
        n = rendering.integer(item.get("complaints"))
        shown.append({"id": str(item["id"]), "title": str(item.get("title") or item["id"]),
                      "category": category_label(policy, item.get("category"), page_language),
                      "complaints": n, "count": count % {"n": n, "days": days}, "text": text})
    return shown


def for_case(case: dict, actions, services, token: str, *, policy, language: str) -> dict:
    """{action: answers (or None: unavailable)} for the case's forms among `actions` that offer
    answers, one call a purpose."""
    customer = case.get("customer") if isinstance(case.get("customer"), dict) else {}
    found = {}
    for action in dict.fromkeys(a for a in actions if a in TASK_PURPOSES):
        found[action] = offered(services, token, purpose=TASK_PURPOSES[action], language=customer.get("language"),
                                policy=policy, page_language=language, case_id=str(case.get("id") or "") or None)
    return found
