"""HQ's and everyone's overview pages: the alerts (reporting's), a link into reporting's
dashboard with a token for the signed-in staff member, and the staff notices (investigation's).

- `/alerts` (the roles that read reporting's alerts; others get the 403 page): reporting's
  `GET /v1/alerts` with the staff member's own token, so reporting scopes them: recurring
  problems and product safety signals (what each is about, how many, its window, the branches,
  open until, links to its first 10 cases and "and N more" when it counts more: reporting lists
  50 unless asked for all), and the cases breaching their SLA now by branch, each linked to its
  case page. The labels repeated on every record ("Case n", the clock, the priority) are
  translated once a page, not once a record (1,530 gettext calls a page with 10,000 open
  cases). The list refreshes itself every 60 s (htmx).
- The dashboard link: reporting's `/dashboard#token=...` (the page keeps the token from the
  URL's fragment, which browsers never send to a server) with a token signed by the console's
  own key (the one `closeloop token issue` and the call tokens use), living
  `policy.Tokens.dashboard_ttl` (30 minutes, see there why). Its base is `DASHBOARD_URL` (the
  config, else the environment), else the REPORTING_URL the console calls: in docker-compose
  the browser must go through the gateway, not to the container.
- `/notifications` (every staff role): the escalation and approval messages investigation
  addresses to the staff member's role in their scope (`GET /v1/notifications`, the same rows
  the notification port sends), newest first, what happened, the case with its link and when,
  in the case's branch's time zone; the first page refreshes itself every 30 s; older pages by
  investigation's cursor. The nav shows no count of new ones: it would cost a call to
  investigation on every page of the console."""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from nameko.extensions import DependencyProvider

from services.console import rendering, web
from services.console.clients import ServiceDown, ServiceRefused, base_urls
from services.console.policy import RULES
from services.console.rendering import N_
from shared.security import auth

log = logging.getLogger("closeloop.console")

ALERT_ROLES = ("store_manager", "investigator", "regional_manager", "hq_analyst", "hq_admin")
NOTICES_PAGE = 50
ALERT_CASES = 10  # the case links an alert shows, then "and N more" (28 alerts of 50 links: 126 KB a page)
_CURSOR = re.compile(r"\A[A-Za-z0-9_=-]{1,400}\Z")

ALERT_KINDS = {"recurring_problem": N_("Recurring problem"), "safety_signal": N_("Product safety signal")}
CATEGORIES = {"service_quality": N_("Service quality"), "product_quality": N_("Product quality"),
              "hygiene_environment": N_("Hygiene and environment"), "booking": N_("Booking"), "price": N_("Price"),
              "staff_attitude": N_("Staff attitude"), "after_sales": N_("After-sales"), "safety": N_("Safety")}
CLOCKS = {"first_response": N_("First response"), "resolution": N_("Resolution")}
NOTICE_KINDS = {"approval_requested": N_("Approval requested"), "approval_overdue": N_("Approval overdue"),
                "escalated": N_("Escalated to you"), "sla_warning": N_("Deadline approaching"),
                "overdue": N_("Deadline passed"), "corrective_action_overdue": N_("Corrective action overdue"),
                "customer_message_failed": N_("Message to the customer not sent")}


def _t(language: str, labels: dict, key) -> str:
    """A known key's label, translated; anything else as it came (data, escaped on the page)."""
    return rendering.gettext(language, labels[key]) if key in labels else str(key or "")


def _text(value, most: int = 500) -> str:
    return str(value or "")[:most]


# -- the dashboard's link --------------------------------------------------------------------------

def dashboard_base(config: dict, env=os.environ) -> str:
    """Where a browser reaches reporting's dashboard: DASHBOARD_URL, else the REPORTING_URL the
    console calls."""
    given = config.get("DASHBOARD_URL") or env.get("DASHBOARD_URL")
    return (given or base_urls(config, env)["reporting"]).rstrip("/")


class DashboardLinks:
    """Dashboard links for staff members: a token of their own (subject, role, scope) signed
    with the console's key, living `ttl`. Time is the system's, as for the call tokens: reporting
    checks expiry against its own real clock."""

    def __init__(self, base: str, ttl=RULES.tokens.dashboard_ttl, private_key: bytes | None = None):
        self.base, self.ttl, self._key = base, ttl, private_key
        self._lock = threading.Lock()

    def link(self, member) -> tuple[str, datetime]:
        """(the URL with the token in its #fragment, when the token ends)."""
        with self._lock:
            if self._key is None:
                self._key = auth.load_private_key()
        now = datetime.fromtimestamp(time.time(), timezone.utc)
        token = auth.issue_token(role=member.role, subject=member.login, ttl=self.ttl, private_key=self._key,
                                 now=now, **member.token_scope())
        return f"{self.base}/dashboard#{urlencode({'token': token})}", now + self.ttl


class DashboardLink(DependencyProvider):
    """The console's DashboardLinks, one a process, its base from the config or the environment."""

    def setup(self):
        self.links = DashboardLinks(dashboard_base(self.container.config))

    def get_dependency(self, worker_ctx):
        return self.links


# -- alerts -----------------------------------------------------------------------------------------

def _chain_zone(policy) -> ZoneInfo:
    """A chain-wide record's zone (a safety signal across branches): the one most branches keep."""
    zones = Counter(b.timezone for b in policy.branches.values())
    return ZoneInfo(zones.most_common(1)[0][0] if zones else "Asia/Shanghai")


def _zone(policy, branch) -> ZoneInfo:
    return policy.branches[branch].zone if branch in policy.branches else _chain_zone(policy)


def _about(alert: dict, language: str) -> str:
    about = alert.get("about") if isinstance(alert.get("about"), dict) else {}
    if alert.get("by") == "branch_category":
        return f"{_text(about.get('branch_code'), 50)} · {_t(language, CATEGORIES, _text(about.get('category'), 100))}"
    if alert.get("by") == "technician":
        return rendering.gettext(language, N_("Technician %(id)s")) % {"id": _text(about.get("technician_id"), 100)}
    return rendering.gettext(language, N_("Batch %(batch)s")) % {"batch": _text(about.get("batch"), 100)}


def _alert(alert: dict, policy, language: str) -> dict:
    branches = [_text(b, 50) for b in alert.get("branches") or [] if isinstance(b, str)]
    about = alert.get("about") if isinstance(alert.get("about"), dict) else {}
    zone = _zone(policy, about.get("branch_code") or (branches[0] if len(branches) == 1 else None))
    kind = _text(alert.get("kind"), 50)
    given = [str(r) for r in alert.get("records") or [] if isinstance(r, str)]
    records, count = given[:ALERT_CASES], rendering.integer(alert.get("count"))
    # reporting says when it lists fewer than it counts (an older one listed them all)
    more = max(count - len(records), 0) if alert.get("records_more") is True or len(given) > len(records) else 0
    when = {name: rendering.format_instant(rendering.parse_instant(alert.get(key)), zone, language)
            for name, key in (("first", "first_at"), ("last", "last_at"), ("until", "open_until"))}
    return {"kind": kind, "kind_label": _t(language, ALERT_KINDS, kind), "about": _about(alert, language),
            "count": count, "chain_count": alert.get("chain_count"),
            "branches": branches, **when, "open": bool(alert.get("open")),
            # a recurring problem counts cases (their pages are the console's); a signal counts visits
            "cases": records if kind == "recurring_problem" else [],
            "more": more if kind == "recurring_problem" else 0}


def _labels(language: str) -> dict:
    """The labels every record of the page repeats, translated once: the clocks and priorities
    (by key), the case links' "Case %(n)s" (formatted in the template)."""
    return {"clocks": {key: rendering.gettext(language, label) for key, label in CLOCKS.items()},
            "priorities": {key: rendering.gettext(language, label) for key, label in rendering.PRIORITY_LABELS.items()},
            "case_label": rendering.gettext(language, N_("Case %(n)s")),
            "more_label": rendering.gettext(language, N_("and %(n)s more"))}


def _late_branch(row: dict, policy, now: datetime, language: str, labels: dict | None = None) -> dict:
    labels = labels or _labels(language)
    branch = _text(row.get("branch_code"), 50)
    zone = _zone(policy, branch)
    cases = []
    for case in row.get("worst") or []:
        if not isinstance(case, dict) or not case.get("case_id"):
            continue
        due = rendering.parse_instant(case.get("due"))
        priority, clock = _text(case.get("priority"), 20), case.get("clock")
        cases.append({"id": _text(case.get("case_id"), 64), "reference": _text(case.get("reference"), 100),
                      "priority": priority, "priority_label": labels["priorities"].get(priority, priority),
                      "clock": labels["clocks"].get(clock) or _text(clock, 50),
                      "due": rendering.format_instant(due, zone, language), "due_iso": due.isoformat() if due else "",
                      "late": rendering.format_remaining((due - now).total_seconds(), language) if due else ""})
    return {"branch": branch, "count": rendering.integer(row.get("cases")), "first_response": rendering.integer(row.get("first_response")),
            "resolution": rendering.integer(row.get("resolution")), "cases": cases}


def alerts(store, request, *, services, tokens, policy, now: datetime, dashboard: DashboardLinks):
    caller = web.open_caller(store, request, now)
    if caller.staff.role not in ALERT_ROLES:
        raise web.PageError(403, N_("Your role does not read alerts."))
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    raised, late, problem = [], [], None
    labels = _labels(caller.language)
    try:
        answer = services.reporting.get("/v1/alerts", token)
        raised = [_alert(a, policy, caller.language) for a in answer.get("alerts") or [] if isinstance(a, dict)]
        late = [_late_branch(b, policy, now, caller.language, labels) for b in answer.get("breaching") or []
                if isinstance(b, dict)]
    except ServiceRefused as refused:
        log.warning("reporting refused the alerts: %s", refused)
        problem = N_("The alerts are not available right now.")
    except ServiceDown as down:
        log.warning("alerts unavailable: %s", down)
        problem = N_("The alerts are not available right now.")
    context = dict(alerts=raised, breaching=late, problem=problem, now_iso=now.isoformat(),
                   case_label=labels["case_label"], more_label=labels["more_label"],
                   safety=sum(a["kind"] == "safety_signal" for a in raised),
                   late_cases=sum(b["count"] for b in late))
    if web.is_htmx(request):  # the refresh: the lists alone (no new dashboard token each minute)
        response = web.html(request, caller, "_alerts.html", **context)
    else:
        link, ends = dashboard.link(caller.staff)
        minutes = int(dashboard.ttl.total_seconds() // 60)
        response = web.html(request, caller, "alerts.html", here="/alerts", dashboard_url=link,
                            dashboard_minutes=minutes, **context)
    response.headers["Vary"] = "HX-Request, Cookie"
    return response


# -- notifications ------------------------------------------------------------------------------

def _notice(item: dict, policy, language: str) -> dict:
    branch = _text(item.get("branch_code"), 50)
    at = rendering.parse_instant(item.get("created_at"))
    kind = _text(item.get("kind"), 50)
    reference, text = _text(item.get("reference"), 100), _text(item.get("text"), 1000)
    if reference and text.startswith(f"[{reference}] "):  # the reference is the notice's link already
        text = text[len(reference) + 3:]
    return {"id": _text(item.get("id"), 30), "kind": kind,
            "kind_label": _t(language, NOTICE_KINDS, kind) if kind in NOTICE_KINDS
            else rendering.gettext(language, N_("Notice")),
            "case_id": _text(item.get("case_id"), 64), "reference": reference, "branch": branch, "text": text,
            "at": rendering.format_instant(at, _zone(policy, branch), language), "at_iso": at.isoformat() if at else ""}


def notifications(store, request, *, services, tokens, policy, now: datetime):
    caller = web.open_caller(store, request, now)
    cursor = request.args.get("cursor") or ""
    if cursor and not _CURSOR.match(cursor):
        cursor = ""
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    rows, more, problem = [], None, None
    try:
        answer = services.investigation.get("/v1/notifications", token, limit=NOTICES_PAGE, cursor=cursor or None)
        rows = [_notice(i, policy, caller.language) for i in answer.get("items") or [] if isinstance(i, dict)]
        following = answer.get("next_cursor")
        if isinstance(following, str) and _CURSOR.match(following):
            more = "/notifications?" + urlencode({"cursor": following})
    except ServiceRefused as refused:
        log.warning("investigation refused the notifications: %s", refused)
        problem = (N_("That page of notifications is no longer available.") if refused.status == 400
                   else N_("The notifications are not available right now."))
    except ServiceDown as down:
        log.warning("notifications unavailable: %s", down)
        problem = N_("The notifications are not available right now.")
    context = dict(notices=rows, more=more, problem=problem, older=bool(cursor))
    template = "_notifications.html" if web.is_htmx(request) else "notifications.html"
    response = web.html(request, caller, template, here="/notifications", **context)
    response.headers["Vary"] = "HX-Request, Cookie"
    return response
