"""Console: the staff's web front end. Thin entrypoints: each page calls a handler (handlers.py,
login.py) with the database, the clock and the clients of the four services; answers are HTML
(web.py), assets come from static/. Owns staff accounts and sessions; reads and writes the other
services only through their APIs, with the signed-in staff member's own token."""
from __future__ import annotations

import time

import sqlalchemy as sa
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from werkzeug.wrappers import Response

from services.console import assets, call_list, cases, customers, front_desk, handlers, library, login, overview
from services.console.clients import Services, StaffTokens, base_urls
from services.console.policy import RULES
from services.console.repository import ConsoleStore
from services.console.web import page
from shared.observability.logs import CorrelationLogging
from shared.persistence.unit_of_work import Database
from shared.runtime.provider import Runtime
from shared.web import health
from shared.web.http import api

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Backends(DependencyProvider):
    """The four services' clients (base URLs from the config or the environment) and the cache
    of the staff members' tokens, one of each per process. SERVICE_TIMEOUT_SECONDS,
    SERVICE_REST_SECONDS and EXPORT_WAIT_SECONDS in the config may shorten the policy's figures
    (the tests do)."""

    def setup(self):
        config = self.container.config
        self.services = Services(base_urls(config),
                                 float(config.get("SERVICE_TIMEOUT_SECONDS") or RULES.service_timeout_seconds),
                                 rest=float(config.get("SERVICE_REST_SECONDS") or RULES.service_rest_seconds),
                                 wait=float(config.get("EXPORT_WAIT_SECONDS") or RULES.export_wait_seconds))
        self.tokens = StaffTokens(RULES.tokens)

    def get_dependency(self, worker_ctx):
        return self


class ConsoleService:
    name = "console"

    db = Database(ConsoleStore)
    env = Runtime()
    backends = Backends()
    logging = CorrelationLogging()

    # -- signing in and out (login.py: the one module a chain's single sign-on replaces) ----------

    @page("GET", "/login")
    def login_form(self, request):
        return login.form(self.db, request, self.env.now())

    @page("POST", "/login")
    def login_submit(self, request):
        return login.password_sign_in(self.db, request, self.env.now())

    @page("POST", "/logout")
    def logout(self, request):
        return login.sign_out(self.db, request, self.env.now())

    @page("GET", "/logout")
    def logout_page(self, request):
        return login.confirm_sign_out(self.db, request, self.env.now())

    @page("POST", "/language")
    def language(self, request):
        return handlers.choose_language(self.db, request, now=self.env.now())

    # -- pages --------------------------------------------------------------------------------------

    @page("GET", "/")
    def my_work(self, request):
        return handlers.my_work(self.db, request, services=self.backends.services, tokens=self.backends.tokens,
                                policy=self.env.policy, now=self.env.now())

    # -- a case and its tasks (cases.py) ---------------------------------------------------------

    @page("GET", "/cases/<case_id>")
    def case_page(self, request, case_id):
        return cases.case_page(self.db, request, case_id, **self._deps())

    @page("POST", "/cases/<case_id>/contact")
    def case_contact(self, request, case_id):
        return cases.show_contact(self.db, request, case_id, **self._deps())

    @page("POST", "/cases/<case_id>/tasks/<task>")
    def complete_case_task(self, request, case_id, task):
        return cases.complete_task(self.db, request, case_id, task, **self._deps())

    @page("POST", "/cases/<case_id>/convert")
    def convert_inquiry(self, request, case_id):
        return cases.convert(self.db, request, case_id, **self._deps())

    # -- a customer's file (customers.py; reporting's) ------------------------------------------

    @page("GET", "/customers/<customer_ref>")
    def customer_file(self, request, customer_ref):
        return customers.customer_page(self.db, request, customer_ref, **self._deps())

    # -- the front desk: new complaint, new sale, look-up (front_desk.py) --------------------------

    @page("GET", "/complaints/new")
    def new_complaint_form(self, request):
        return front_desk.complaint_form(self.db, request, policy=self.env.policy, now=self.env.now())

    @page("POST", "/complaints/new")
    def new_complaint(self, request):
        return front_desk.complaint_submit(self.db, request, **self._deps())

    @page("GET", "/sales/new")
    def new_sale_form(self, request):
        return front_desk.sale_form(self.db, request, policy=self.env.policy, now=self.env.now())

    @page("POST", "/sales/new")
    def new_sale(self, request):
        return front_desk.sale_submit(self.db, request, **self._deps())

    @page("GET", "/lookup")
    def lookup(self, request):
        return front_desk.lookup(self.db, request, **self._deps())

    @page("POST", "/lookup")
    def lookup_submit(self, request):
        return front_desk.lookup_submit(self.db, request, **self._deps())


    # -- aftercare: the call list and a visit (call_list.py) ---------------------------------------

    @page("GET", "/visits")
    def call_list_page(self, request):
        return call_list.call_list(self.db, request, **self._deps())

    @page("POST", "/visits/next")
    def next_visit(self, request):
        return call_list.next_visit(self.db, request, **self._deps())

    @page("GET", "/visits/<visit_id>")
    def visit(self, request, visit_id):
        return call_list.visit_page(self.db, request, visit_id, **self._deps())

    @page("GET", "/visits/<visit_id>/contact")
    def visit_contact(self, request, visit_id):
        return call_list.contact(self.db, request, visit_id, **self._deps())

    @page("POST", "/visits/<visit_id>/attempts")
    def visit_attempt(self, request, visit_id):
        return call_list.record_attempt(self.db, request, visit_id, **self._deps())

    @page("POST", "/visits/<visit_id>/release")
    def visit_release(self, request, visit_id):
        return call_list.release(self.db, request, visit_id, **self._deps())

    @page("GET", "/visits/<visit_id>/urgent-case")
    def visit_urgent_case(self, request, visit_id):
        return call_list.urgent_case(self.db, request, visit_id, **self._deps())

    def _deps(self) -> dict:
        """What a page working the services needs: their clients, the staff tokens, the policy, now."""
        return dict(services=self.backends.services, tokens=self.backends.tokens, policy=self.env.policy,
                    now=self.env.now())

    # -- HQ and everyone: alerts, the dashboard's link, notifications (overview.py) -----------------

    dashboard = overview.DashboardLink()  # the dashboard link's tokens; its base from DASHBOARD_URL

    @page("GET", "/alerts")
    def alerts(self, request):
        return overview.alerts(self.db, request, dashboard=self.dashboard, **self._deps())

    @page("GET", "/notifications")
    def notifications(self, request):
        return overview.notifications(self.db, request, **self._deps())

    # -- the case library and the standard answers' use (library.py; reporting's) ------------------

    @page("GET", "/library")
    def library_page(self, request):
        return library.library_page(self.db, request, **self._deps())

    @page("GET", "/library/case-library")
    def case_library_download(self, request):
        return library.download(self.db, request, **self._deps())

    @page("GET", "/static/<path:name>")
    def static(self, request, name):
        return assets.serve(name, request)

    @page("GET", "/<path:anything>")
    @page("POST", "/<path:anything>")
    def not_found(self, request, anything):
        return handlers.not_found(self.db, request, now=self.env.now())

    # -- housekeeping -------------------------------------------------------------------------------

    @timer(interval=600)
    def purge_sessions(self):
        handlers.purge_sessions(self.db, now=self.env.now(), rules=RULES)

    # -- operations ---------------------------------------------------------------------------------

    @api("GET", "/health", public=True)
    def health(self, request):
        return self._ready()

    @api("GET", "/health/ready", public=True)
    def ready(self, request):
        return self._ready()

    def _ready(self):
        started = time.perf_counter()
        try:
            with self.db.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - a probe gets an answer, whatever failed
            return 503, {"service": self.name, "status": "down", "reasons": ["the database is unreachable"],
                         "checks": {"database": {"status": "down", "error": exc.__class__.__name__}}}
        latency = round((time.perf_counter() - started) * 1000, 1)
        return 200, {"service": self.name, "status": "ok", "reasons": [],
                     "checks": {"database": {"status": "ok", "latency_ms": latency}}}

    @api("GET", "/metrics", public=True)
    def metrics(self, request):
        return Response(health.replica_metrics_text(self.name), content_type=PROMETHEUS_TEXT)
