"""The front desk's pages: a new complaint (or inquiry, suggestion, praise), a new sale, and a look-up
that tells a customer where their complaint stands. For the roles front_desk and store_manager;
the branch is the staff member's (a choice only when their scope holds several branches).

Everything goes through intake's public API with the staff member's own token:
- `POST /v1/complaints` and `POST /v1/sales` with an `Idempotency-Key` made when the form is
  shown (a hidden field), so a double click or a retry answers the first answer instead of
  filing twice; intake's per-field errors are shown beside the fields, with what was typed;
- the look-up: `GET /v1/complaints/{id}` for an id, and for a reference (`SH001-20261122-0007`:
  branch, local day, number) `GET /v1/complaints?branch=&from=&to=` over that branch's local
  day; for a phone number, intake's `POST /v1/customers/lookup` with the purpose the front desk
  states (a choice, or their own words; intake logs who looked whom up and why), listing the
  customer's complaints in the staff member's branches with where each stands, linked to its case,
  and the customer's file (reporting's, by the `customer_ref` intake answers: customers.py).
  The look-up form is a POST (with the session's CSRF token) answered by the page itself, so a
  phone never appears in a URL (the browser's history, the gateway's access log); the page shows
  it masked only. A phone in `GET /lookup?q=` (typed into an address bar) is not looked up.

Form fields are named by the API's paths (`customer.phone`, `products.0.batch`), so an error
intake names lands beside its field; rows left empty are not sent, and the errors of the rows
sent are moved back to the rows typed."""
from __future__ import annotations

import logging
import re
import uuid
from datetime import date, datetime, time, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from services.console import customer_summary, rendering, web
from services.console.clients import ServiceDown, ServiceRefused
from services.console.rendering import N_
from shared.web.text import TextRefused, clean_text

log = logging.getLogger("closeloop.console.front_desk")

DESK_ROLES = frozenset({"front_desk", "store_manager"})
KINDS = ("complaint", "inquiry", "suggestion", "praise")
CHANNELS = ("front_desk", "phone", "wechat", "social_media", "email", "web_form", "online_chat")
FLAGS = ("allergy", "burn", "injury", "infection", "serious_service_failure", "legal_threat", "media_threat",
         "wide_reach")
CUSTOMER_LANGUAGES = (("zh", "中文"), ("en", "English"))  # each in its own language
PRODUCT_ROWS, ITEM_ROWS, MAX_ROWS = 2, 3, 20

KIND_LABELS = {"complaint": N_("Complaint"), "suggestion": N_("Suggestion"), "praise": N_("Praise"),
               "inquiry": N_("Inquiry")}
CHANNEL_LABELS = {"front_desk": N_("At the front desk"), "phone": N_("Phone"), "wechat": N_("WeChat"),
                  "social_media": N_("Social media"), "email": N_("Email"), "web_form": N_("Web form"),
                  "online_chat": N_("Online chat")}
FLAG_LABELS = {"allergy": N_("Allergy"), "burn": N_("Burn"), "injury": N_("Injury"), "infection": N_("Infection"),
               "serious_service_failure": N_("Serious service failure"), "legal_threat": N_("Legal threat"),
               "media_threat": N_("Media threat"), "wide_reach": N_("Many customers affected")}
PRODUCT_TYPE_LABELS = {"skincare": N_("Skincare"), "cosmetics": N_("Cosmetics"), "fragrance": N_("Fragrance"),
                       "hair_colour": N_("Hair colour"), "perm": N_("Perm"), "treatment": N_("Treatment"),
                       "other": N_("Other")}
ITEM_TYPE_LABELS = {"product": N_("Product"), "service": N_("Service")}
STATUS_LABELS = {"received": N_("Registered"), "acknowledged": N_("Being handled"),
                 "investigating": N_("Under investigation"), "resolved": N_("Resolved"), "closed": N_("Closed")}
# What to tell the customer, status by status (intake's statuses follow the case's events).
STATUS_WORDS = {
    "received": N_("We have received it. The branch will contact the customer by the first response time below."),
    "acknowledged": N_("The branch has contacted the customer and is handling the complaint."),
    "investigating": N_("The branch is looking into what happened; the customer will hear the result."),
    "resolved": N_("Resolved: the result has been sent to the customer; a satisfaction call follows in a few "
                   "days."),
    "closed": N_("Closed: the complaint has been dealt with."),
}

# intake's messages (English, for machines and developers) as the console shows them: a msgid
# where one says the same, else intake's own words.
_KNOWN = (
    ("Missing data for required field.", N_("Required")),
    ("Field may not be null.", N_("Required")),
    ("Shorter than minimum length 1.", N_("Required")),
    ("not a phone number", N_("Not a phone number: a mobile such as 13812346138, a landline such as "
                              "021-12345678, or + country code and number.")),
    ("give a phone or an email", N_("Give a phone number or an email, so that the customer can be answered.")),
    ("not an email address", N_("Not an email address.")),
    ("a name is letters", N_("A name has letters, spaces and · . ' - only.")),
    ("a name needs at least one letter", N_("A name has letters, spaces and · . ' - only.")),
    ("a name must not look like a web address", N_("A name must not look like a web address.")),
    ("must not be in the future", N_("Must not be in the future.")),
    ("must not be before", N_("Too long ago.")),
    ("Not a valid datetime", N_("Not a valid date and time.")),
    ("Longer than maximum length", N_("Too long.")),
    ("Must be one of", N_("Choose one of the options.")),
    ("must be one of", N_("Choose one of the options.")),
    ("a product needs its sku", N_("A product needs its SKU.")),
    ("a service needs its code", N_("A service needs its code.")),
    ("required: your token covers several branches", N_("Choose the branch.")),
    ("unknown branch", N_("Choose the branch.")),
    ("Unknown field.", N_("Invalid")),
    ("a purpose of at least", N_("Say why in a few words (at least 2 letters).")),
)

ALREADY_SENT = N_("This form was already sent with other details (the first one was filed). The form below is "
                  "a new one: send it only to file another.")
INTAKE_DOWN = N_("Intake is not answering right now. Send the form again in a moment: it is never filed twice.")
TOO_MANY = N_("Too many were filed just now. Wait a minute and send the form again.")
FIX_FIELDS = N_("Please fill in the fields marked.")
NO_KEY = N_("The form has no idempotency key; it was sent from elsewhere. Check it and send it again.")
NOT_YOURS = N_("Your role does not work at the front desk.")

_KEY = re.compile(r"\A[A-Za-z0-9-]{8,64}\Z")
# The fields the forms show errors beside; intake's errors for any other name are listed above the form.
_PLACED = re.compile(r"\A(kind|channel|category|description|occurred_at|branch_code|sold_at|severity_flags|service"
                     r"|products|items|customer)(\.(name|phone|email|language|contact_consent|code|technician_id))?\Z"
                     r"|\A(products|items)\.\d+\.(sku|name|batch|code|type|product_type|technician_id)\Z")
_REFERENCE = re.compile(r"\A([A-Z0-9]{1,20})-(\d{8})-(\d{1,6})\Z")
# What looks like a phone: digits with intake's separators (spaces, dashes, brackets) and an
# optional +. Whether it is one is intake's rule (shared.security.privacy.normalize_phone), which
# names the field when it is not.
_PHONE = re.compile(r"\A\+?[\d\s()-]{7,20}\Z")
LOOKUP_PAGES = 10  # pages of 200 complaints of one branch's day, at most
# Why a front desk looks a customer up by phone (intake logs it); the first is the usual one.
LOOKUP_PURPOSES = {"status": N_("The customer asks where their complaint stands"),
                   "new_complaint": N_("The customer is making another complaint"),
                   "call_back": N_("Calling the customer back about a complaint")}
# Who may open a case (investigation's case:read): the look-up links each complaint to its case.
CASE_READERS = frozenset({"front_desk", "store_manager", "aftercare_agent", "investigator", "regional_manager",
                          "hq_analyst", "hq_admin"})
LOOKUP_DOWN = N_("Intake is not answering right now. Try again in a moment.")
PHONE_BY_FORM = N_("A phone number is looked up with the form below, which keeps it out of the address bar. "
                   "Type it there again.")


# -- what every page needs -------------------------------------------------------------------------

def _desk_caller(store, request, now, values=None):
    """The signed-in staff member, who must work at a front desk (else the 403 page)."""
    caller = web.open_caller(store, request, now, values=values)
    if caller.staff.role not in DESK_ROLES:
        raise web.PageError(403, NOT_YOURS)
    return caller


def _branches(staff, policy) -> list[str]:
    """The branches the staff member may file for: their own, their region's, or the chain's."""
    if staff.scope_kind == "branch":
        return [staff.scope_value] if staff.scope_value in policy.branches else []
    if staff.scope_kind == "region":
        return sorted(code for code, b in policy.branches.items() if b.region == staff.scope_value)
    return sorted(policy.branches)


def _zone(policy, branch: str | None) -> str | None:
    return policy.branches[branch].timezone if branch in policy.branches else None


def _text(language: str):
    return lambda msgid: rendering.gettext(language, msgid)


def _labels(language: str, policy) -> dict:
    """Every option's label in the page's language (text, escaped on the page)."""
    t = _text(language)
    rules = policy.sections.get("intake")
    categories = getattr(rules, "categories", {}) or {}
    return {
        "kinds": [(k, t(KIND_LABELS[k])) for k in KINDS],
        "channels": [(c, t(CHANNEL_LABELS[c])) for c in CHANNELS],
        "flags": [(f, t(FLAG_LABELS[f])) for f in FLAGS],
        "categories": [(code, c.label_zh if language == "zh" else c.label_en) for code, c in categories.items()],
        "product_types": [(p, t(PRODUCT_TYPE_LABELS[p]) if p in PRODUCT_TYPE_LABELS else p)
                          for p in policy.product_types],
        "item_types": [(k, t(v)) for k, v in ITEM_TYPE_LABELS.items()],
        "customer_languages": CUSTOMER_LANGUAGES,
        "branches": {code: b.name for code, b in policy.branches.items()},
    }


def _rows(values: dict, prefix: str, least: int) -> int:
    """How many rows of `prefix` the form shows: what it had (or `least`), one more when asked."""
    try:
        rows = int(values.get(f"{prefix}_rows") or least)
    except ValueError:
        rows = least
    if values.get("action") == f"add_{prefix}":
        rows += 1
    return max(least, min(rows, MAX_ROWS))


def _message(language: str, text: str) -> str:
    t = _text(language)
    for start, msgid in _KNOWN:
        if text.startswith(start):
            return t(msgid)
    return text


def _shown_errors(language: str, fields: dict[str, list[str]], rows: dict[str, dict[int, int]]) -> dict:
    """intake's errors by the form's field names (rows sent -> rows typed), in the page's language."""
    shown: dict[str, list[str]] = {}
    for name, messages in fields.items():
        parts = name.split(".")
        if len(parts) >= 2 and parts[0] in rows and parts[1].isdigit():
            parts[1] = str(rows[parts[0]].get(int(parts[1]), parts[1]))
            if parts[0] == "items" and len(parts) == 3 and parts[2] == "sku":
                parts[2] = "code"  # one field for a product's SKU and a service's code
        key = ".".join(parts)
        for message in messages:
            text = _message(language, message)
            if text not in shown.setdefault(key, []):
                shown[key].append(text)
    return shown


def _unplaced(errors: dict) -> dict:
    return {name: texts for name, texts in errors.items() if not _PLACED.match(name)}


def _local_input(instant: datetime, zone: str | None) -> str:
    """A datetime-local input's value in the branch's zone."""
    return instant.astimezone(ZoneInfo(zone) if zone else None).strftime("%Y-%m-%dT%H:%M")


def _instant(typed: str, zone: str | None):
    """A datetime-local value (the branch's wall clock) as ISO 8601 with its offset; what does
    not parse goes to intake as typed, which names it."""
    try:
        local = datetime.fromisoformat(typed)
    except ValueError:
        return typed
    if local.tzinfo is None:
        local = local.replace(tzinfo=ZoneInfo(zone or "Asia/Shanghai"))
    return local.isoformat()


def _optional(values: dict, *names: str) -> dict:
    """The fields typed (stripped), by their last name part; blanks left out."""
    out = {}
    for name in names:
        typed = (values.get(name) or "").strip()
        if typed:
            out[name.rsplit(".", 1)[-1]] = typed
    return out


def _branch_choice(values: dict, branches: list[str]) -> str | None:
    """The branch the form files for: the only one, else the one chosen (None: none chosen)."""
    if len(branches) == 1:
        return branches[0]
    chosen = (values.get("branch_code") or "").strip()
    return chosen or None


def _refusal(language: str, refused: ServiceRefused, rows: dict) -> tuple[dict, str]:
    """(errors beside fields, the message above the form) for intake's refusal of a form."""
    if refused.status == 400:
        return _shown_errors(language, refused.fields, rows), FIX_FIELDS
    if refused.status == 403 and "branch" in refused.message:
        return {"branch_code": [_text(language)(N_("Outside your scope."))]}, FIX_FIELDS
    if refused.status == 403:
        raise web.PageError(403, NOT_YOURS)
    if refused.status == 409:
        return {}, ALREADY_SENT
    if refused.status == 429:
        return {}, TOO_MANY
    log.warning("intake refused a front desk form: %s", refused)
    raise web.PageError(refused.status if refused.status < 500 else 502, N_("The request is invalid."))


# -- a new complaint ----------------------------------------------------------------------------------

def complaint_form(store, request, *, policy, now: datetime):
    caller = _desk_caller(store, request, now)
    branches = _branches(caller.staff, policy)
    return _complaint_page(request, caller, policy, branches, values={"customer.language": caller.language,
                                                                       "channel": "front_desk",
                                                                       "kind": "complaint"},
                           key=str(uuid.uuid4()))


def _complaint_page(request, caller, policy, branches, *, values: dict, key: str, errors: dict | None = None,
                    problem: str | None = None, status: int = 200):
    return web.html(request, caller, "front_desk_complaint.html", status=status, here="/complaints/new",
                    values=values, errors=errors or {}, other=_unplaced(errors or {}), problem=problem, key=key,
                    branches=branches, product_rows=_rows(values, "products", PRODUCT_ROWS),
                    labels=_labels(caller.language, policy))


def complaint_body(values: dict, *, branches: list[str], policy) -> tuple[dict, dict[int, int]]:
    """intake's POST /v1/complaints body from the form, and which form row each product sent is."""
    branch = _branch_choice(values, branches)
    zone = _zone(policy, branch or (branches[0] if branches else None))
    body: dict = {**_optional(values, "kind", "channel", "description")}
    customer = _optional(values, "customer.name", "customer.phone", "customer.email")
    customer["language"] = values.get("customer.language") or "zh"
    body["customer"] = customer
    if len(branches) != 1:
        body["branch_code"] = branch
    body["category"] = (values.get("category") or "").strip() or None  # none: intake classifies the text
    flags = [flag for flag in FLAGS if values.get(f"flag.{flag}")]
    body["severity_flags"] = flags or None
    if (values.get("occurred_at") or "").strip():
        body["occurred_at"] = _instant(values["occurred_at"].strip(), zone)
    service = _optional(values, "service.code", "service.name", "service.technician_id")
    body["service"] = service or None
    products, sent = [], {}
    for row in range(_rows(values, "products", PRODUCT_ROWS)):
        product = _optional(values, f"products.{row}.sku", f"products.{row}.name", f"products.{row}.batch")
        if product:
            sent[len(products)] = row
            products.append(product)
    body["products"] = products
    return body, sent


def _send_once(request, caller, services, tokens, path: str, body: dict, key: str, rows: dict, form):
    """(intake's answer, None) to `body` posted under the form's idempotency key, or (None, the form
    again: `form(**what changed)`) with intake's reasons beside their fields (`rows`: the lines sent,
    to put a line's errors on the line typed), a fresh key after a 409 (the key was used for other
    details), or the key kept when intake is away (sending again never files twice)."""
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    try:
        return services.intake.post_once(path, token, body, key,
                                         correlation_id=request.environ.get("closeloop.correlation_id")), None
    except ServiceRefused as refused:
        errors, problem = _refusal(caller.language, refused, rows)
        fresh = refused.status == 409
        status = 409 if fresh else 400 if refused.status in (400, 403) else refused.status
        return None, form(key=str(uuid.uuid4()) if fresh else key, errors=errors, problem=problem, status=status)
    except ServiceDown as down:
        log.warning("%s not sent: %s", path, down)
        return None, form(key=key, problem=INTAKE_DOWN, status=503)


def _submit(store, request, *, services, tokens, policy, now: datetime, page, body_of, path: str, lines: str,
            done):
    """A front-desk form sent to intake once (its idempotency key): `done(caller, answer)`, or the
    form again (`page`) with why; "add a row" shows the form again with nothing sent."""
    values = web.form(request)
    caller = _desk_caller(store, request, now, values=values)
    branches = _branches(caller.staff, policy)
    form = lambda **more: page(request, caller, policy, branches, values=values, **more)  # noqa: E731
    key = values.get("idempotency_key") or ""
    if values.get("action", "").startswith("add_"):  # one more row: the form again, nothing sent
        return form(key=key if _KEY.match(key) else str(uuid.uuid4()))
    if not _KEY.match(key):
        return form(key=str(uuid.uuid4()), problem=NO_KEY, status=400)
    body, sent = body_of(values, branches=branches, policy=policy)
    answer, again = _send_once(request, caller, services, tokens, path, body, key, {lines: sent}, form)
    return again if again is not None else done(caller, answer)


def complaint_submit(store, request, *, services, tokens, policy, now: datetime):
    return _submit(store, request, services=services, tokens=tokens, policy=policy, now=now, page=_complaint_page,
                   body_of=complaint_body, path="/v1/complaints", lines="products",
                   done=lambda caller, answer: web.html(
                       request, caller, "front_desk_complaint_done.html", here="/complaints/new",
                       complaint=_complaint_view(answer, caller.language, policy), now_iso=now.isoformat()))


def _complaint_view(answer: dict, language: str, policy) -> dict:
    """intake's complaint as the page shows it: labels in the page's language, times in the branch's zone."""
    t = _text(language)
    branch = str(answer.get("branch_code") or "")
    zone = _zone(policy, branch)
    rules = policy.sections.get("intake")
    category = (getattr(rules, "categories", {}) or {}).get(answer.get("category"))
    status = str(answer.get("status") or "")
    customer = answer.get("customer") if isinstance(answer.get("customer"), dict) else {}

    def when(key):
        return rendering.format_instant(answer.get(key), zone, language)

    def iso(key):
        instant = rendering.parse_instant(answer.get(key))
        return instant.isoformat() if instant else ""
    service = answer.get("service") if isinstance(answer.get("service"), dict) else None
    return {
        "id": str(answer.get("id") or ""), "reference": str(answer.get("reference") or ""),
        "branch_code": branch, "kind": t(KIND_LABELS[answer["kind"]]) if answer.get("kind") in KIND_LABELS else "",
        "priority": str(answer.get("priority") or ""),
        "category": (category.label_zh if language == "zh" else category.label_en) if category
        else str(answer.get("category") or ""),
        "automatic": answer.get("category_source") == "automatic",
        "flags": [t(FLAG_LABELS.get(f, f)) if f in FLAG_LABELS else str(f) for f in answer.get("severity_flags") or []],
        "status": status, "status_label": t(STATUS_LABELS[status]) if status in STATUS_LABELS else status,
        "status_words": t(STATUS_WORDS[status]) if status in STATUS_WORDS else "",
        "customer_words": rendering.gettext(customer.get("language"), STATUS_WORDS[status])
        if status in STATUS_WORDS and customer.get("language") in ("zh", "en") and customer.get("language") != language
        else "",
        "received": when("received_at"), "first_response_due": when("first_response_due"),
        "first_response_iso": iso("first_response_due"), "resolution_due": when("resolution_due"),
        "resolution_iso": iso("resolution_due"), "closed": when("closed_at"),
        "description": str(answer.get("description") or ""),
        "acknowledgement": str(answer.get("acknowledgement") or ""),
        "customer_name": str(customer.get("name") or ""), "customer_phone": str(customer.get("phone") or ""),
        "customer_email": str(customer.get("email") or ""),
        "service": service,
        "products": [p for p in answer.get("products") or [] if isinstance(p, dict)],
    }


# -- a new sale -----------------------------------------------------------------------------------------

def sale_form(store, request, *, policy, now: datetime):
    caller = _desk_caller(store, request, now)
    branches = _branches(caller.staff, policy)
    zone = _zone(policy, branches[0] if branches else None)
    values = {"customer.language": caller.language, "sold_at": _local_input(now, zone), "items.0.type": "product"}
    return _sale_page(request, caller, policy, branches, values=values, key=str(uuid.uuid4()))


def _sale_page(request, caller, policy, branches, *, values: dict, key: str, errors: dict | None = None,
               problem: str | None = None, status: int = 200):
    return web.html(request, caller, "front_desk_sale.html", status=status, here="/sales/new", values=values,
                    errors=errors or {}, other=_unplaced(errors or {}), problem=problem, key=key,
                    branches=branches, item_rows=_rows(values, "items", ITEM_ROWS), labels=_labels(caller.language, policy))


def sale_body(values: dict, *, branches: list[str], policy) -> tuple[dict, dict[int, int]]:
    """intake's POST /v1/sales body from the form, and which form row each item sent is."""
    branch = _branch_choice(values, branches)
    zone = _zone(policy, branch or (branches[0] if branches else None))
    customer = _optional(values, "customer.name", "customer.phone", "customer.email")
    customer["language"] = values.get("customer.language") or "zh"
    customer["contact_consent"] = values.get("customer.contact_consent") == "yes"
    body: dict = {"customer": customer}
    if len(branches) != 1:
        body["branch_code"] = branch
    if (values.get("sold_at") or "").strip():
        body["sold_at"] = _instant(values["sold_at"].strip(), zone)
    items, sent = [], {}
    for row in range(_rows(values, "items", ITEM_ROWS)):
        p = f"items.{row}."
        typed = _optional(values, p + "code", p + "name", p + "batch", p + "technician_id")
        if not typed:
            continue  # a row without a code, name, batch or technician is an empty row
        kind = values.get(p + "type") or "product"
        item = {"type": kind, **typed}
        if kind == "product" and "code" in item:
            item["sku"] = item.pop("code")
        product_type = (values.get(p + "product_type") or "").strip()
        if product_type:
            item["product_type"] = product_type
        sent[len(items)] = row
        items.append(item)
    body["items"] = items
    return body, sent


def sale_submit(store, request, *, services, tokens, policy, now: datetime):
    return _submit(store, request, services=services, tokens=tokens, policy=policy, now=now, page=_sale_page,
                   body_of=sale_body, path="/v1/sales", lines="items",
                   done=lambda caller, answer: web.html(request, caller, "front_desk_sale_done.html",
                                                        here="/sales/new",
                                                        sale=_sale_view(answer, caller.language, policy)))


def _sale_view(answer: dict, language: str, policy) -> dict:
    t = _text(language)
    zone = _zone(policy, answer.get("branch_code"))
    customer = answer.get("customer") if isinstance(answer.get("customer"), dict) else {}
    items = []
    for item in answer.get("items") or []:
        if not isinstance(item, dict):
            continue
        product_type = item.get("product_type")
        items.append({"type": t(ITEM_TYPE_LABELS.get(item.get("type"), "Product")),
                      "code": str(item.get("sku") or item.get("code") or ""), "name": str(item.get("name") or ""),
                      "product_type": t(PRODUCT_TYPE_LABELS[product_type]) if product_type in PRODUCT_TYPE_LABELS
                      else str(product_type or ""),
                      "batch": str(item.get("batch") or ""), "technician_id": str(item.get("technician_id") or "")})
    return {"id": str(answer.get("id") or ""), "branch_code": str(answer.get("branch_code") or ""),
            "sold_at": rendering.format_instant(answer.get("sold_at"), zone, language),
            "consent": bool(answer.get("contact_consent")),
            "customer_name": str(customer.get("name") or ""), "customer_phone": str(customer.get("phone") or ""),
            "customer_email": str(customer.get("email") or ""), "lines": items}


# -- the look-up ------------------------------------------------------------------------------------------

def lookup(store, request, *, services, tokens, policy, now: datetime):
    """GET /lookup?q=: a complaint by its reference (or id), as the customer may be told. A phone
    here is in a URL already: not looked up, not shown back, the form offered instead."""
    caller = _desk_caller(store, request, now)
    q = (request.args.get("q") or "").strip()[:100]
    if q and _phone_like(q):
        return _lookup_page(request, caller, now, problem=PHONE_BY_FORM)
    found, problem = _by_reference(caller, services, tokens, q, policy) if q else (None, None)
    return _lookup_page(request, caller, now, q=q, found=found, problem=problem,
                        here="/lookup" + (f"?q={quote(q)}" if q else ""))


def lookup_submit(store, request, *, services, tokens, policy, now: datetime):
    """POST /lookup (the page's form, with the CSRF token): a reference or id as GET does, or a
    phone number through intake's `POST /v1/customers/lookup` with the purpose stated, answered
    by this page (no redirect: the phone would go into the URL) and shown back masked only."""
    values = web.form(request)
    caller = _desk_caller(store, request, now, values=values)
    q = (values.get("q") or "").strip()[:100]
    typed = {"purpose_choice": values.get("purpose_choice") or "", "purpose": values.get("purpose") or ""}
    if not q:
        return _lookup_page(request, caller, now, typed=typed, errors={"q": [_text(caller.language)(N_("Required"))]},
                            status=400)
    if not _phone_like(q):
        found, problem = _by_reference(caller, services, tokens, q, policy)
        return _lookup_page(request, caller, now, q=q, found=found, problem=problem, typed=typed)
    purpose = _lookup_purpose(values, caller.language)
    if not purpose:
        return _lookup_page(request, caller, now, typed=typed, status=400,
                            errors={"purpose": [_text(caller.language)(N_("Required"))]})
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    try:
        answer = services.intake.post("/v1/customers/lookup", token, {"phone": q, "purpose": purpose},
                                      correlation_id=request.environ.get("closeloop.correlation_id"))
    except ServiceDown as down:
        log.warning("look-up by phone failed: %s", down)
        return _lookup_page(request, caller, now, typed=typed, problem=LOOKUP_DOWN, status=503)
    except ServiceRefused as refused:
        if refused.status == 403:
            raise web.PageError(403, NOT_YOURS) from None
        if refused.status != 400:
            log.warning("intake refused a look-up by phone: %s", refused)
            raise web.PageError(refused.status if refused.status < 500 else 502, N_("The request is invalid."))
        shown = _shown_errors(caller.language, {"q" if name == "phone" else name: messages
                                                for name, messages in refused.fields.items()}, {})
        errors = {name: texts for name, texts in shown.items() if name in ("q", "purpose")}
        other = {name: texts for name, texts in shown.items() if name not in errors}
        return _lookup_page(request, caller, now, typed=typed, errors=errors, other=other, status=400,
                            problem=FIX_FIELDS)
    customer = _customer_view(answer, caller, policy)
    return _lookup_page(request, caller, now, typed=typed, customer=customer)


def _lookup_page(request, caller, now: datetime, *, q: str = "", found=None, customer=None, problem=None,
                 typed: dict | None = None, errors: dict | None = None, other: dict | None = None,
                 here: str = "/lookup", status: int = 200):
    """The look-up page: its form (a phone never put back in it), and what was found."""
    typed = typed or {"purpose_choice": "status", "purpose": ""}
    t = _text(caller.language)
    return web.html(request, caller, "front_desk_lookup.html", status=status, here=here, q=q, found=found,
                    customer=customer, problem=problem, errors=errors or {}, other=other or {},
                    purposes=[(key, t(msgid)) for key, msgid in LOOKUP_PURPOSES.items()], typed=typed,
                    now_iso=now.isoformat())


def _phone_like(q: str) -> bool:
    return bool(_PHONE.match(q)) and not _REFERENCE.match(q.upper())


def _lookup_purpose(values: dict, language: str) -> str:
    """The purpose as intake logs it: the front desk's own words, else the one chosen, in their language."""
    try:
        own = clean_text(values.get("purpose") or "")
    except TextRefused:
        own = values.get("purpose") or ""  # intake refuses it, beside the field
    if own:
        return own
    choice = values.get("purpose_choice") or ""
    return _text(language)(LOOKUP_PURPOSES[choice]) if choice in LOOKUP_PURPOSES else ""


def _by_reference(caller, services, tokens, q: str, policy) -> tuple[dict | None, str | None]:
    """(the complaint as the page shows it, None) for a reference or id, else (None, why not)."""
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    try:
        answer = _find(services, token, q.upper(), policy)
    except ServiceDown as down:
        log.warning("look-up failed: %s", down)
        return None, LOOKUP_DOWN
    except ServiceRefused as refused:
        if refused.status == 403:
            raise web.PageError(403, NOT_YOURS) from None
        answer = None
    if answer is None:
        return None, N_("No complaint with this reference in your branches.")
    return _complaint_view(answer, caller.language, policy), None


def _customer_view(answer: dict, caller, policy) -> dict:
    """intake's look-up by phone as the page shows it: the phone masked, each complaint as the
    reference look-up shows it (linked to its case for a role that reads cases), the sales."""
    customer = answer.get("customer") if isinstance(answer.get("customer"), dict) else {}
    complaints = []
    for item in answer.get("complaints") or []:
        if not isinstance(item, dict):
            continue
        view = _complaint_view(item, caller.language, policy)
        try:
            case_id = str(uuid.UUID(view["id"]))
        except ValueError:
            case_id = None
        view["case_path"] = f"/cases/{case_id}" if case_id and caller.staff.role in CASE_READERS else None
        complaints.append(view)
    sales = [_sale_view(item, caller.language, policy) for item in answer.get("sales") or [] if isinstance(item, dict)]
    ref = answer.get("customer_ref")
    file = (customer_summary.file_path(ref) if isinstance(ref, str) and customer_summary.REF.match(ref)
            and caller.staff.role in customer_summary.FILE_ROLES else None)
    return {"phone": str(customer.get("phone") or ""), "complaints": complaints, "sales": sales, "file": file,
            "more_complaints": bool(answer.get("more_complaints")), "more_sales": bool(answer.get("more_sales"))}


def _find(services, token: str, q: str, policy) -> dict | None:
    """The complaint of a reference (over its branch's local day) or an id; None: not found (or
    outside the caller's scope, which intake answers the same)."""
    try:
        return services.intake.get(f"/v1/complaints/{uuid.UUID(q)}", token)
    except ValueError:
        pass
    except ServiceRefused as refused:
        if refused.status == 404:
            return None
        raise
    match = _REFERENCE.match(q)
    if match is None or match.group(1) not in policy.branches:
        return None
    branch = policy.branches[match.group(1)]
    q = f"{branch.code}-{match.group(2)}-{int(match.group(3)):04d}"  # SH001-20261122-7 is -0007
    try:
        day = date(int(match.group(2)[:4]), int(match.group(2)[4:6]), int(match.group(2)[6:]))
    except ValueError:
        return None
    start = datetime.combine(day, time(), tzinfo=branch.zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=branch.zone)
    params = {"branch": branch.code, "from": start.isoformat(), "to": end.isoformat(), "limit": 200}
    for _ in range(LOOKUP_PAGES):
        try:
            page = services.intake.get("/v1/complaints", token, **params)
        except ServiceRefused as refused:
            if refused.status in (400, 404):
                return None
            raise
        items = page.get("items") if isinstance(page.get("items"), list) else []
        for item in items:
            if isinstance(item, dict) and item.get("reference") == q:
                return item
        if not page.get("next_cursor"):
            return None
        params["cursor"] = page["next_cursor"]
    return None
