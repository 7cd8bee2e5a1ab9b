"""Reporting: what headquarters sees of the whole chain. Thin entrypoints: every event of
intake, investigation and aftercare arrives in batches (shared.messaging.batches), is logged
once and folded into the read models, and may raise an alert; HTTP serves the KPIs, alerts,
exports, the archive access log and the dashboard. Errors become the JSON error shape in
shared.web.http."""
from nameko.timer import timer
from werkzeug.wrappers import Response

from services.reporting import dashboard, handlers, openapi, retention
from services.reporting.repository import ReportingStore
from shared.messaging.batches import handle_all
from shared.observability.logs import CorrelationLogging
from shared.persistence import anonymisation
from shared.persistence.anonymisation import retention_timer
from shared.persistence.unit_of_work import Database
from shared.runtime.provider import Runtime
from shared.web import health
from shared.web.http import api, identity, query_args
from shared.web.operations import Operations


class ReportingService(Operations):
    openapi_document = openapi.DOCUMENT
    name = "reporting"

    db = Database(ReportingStore)
    env = Runtime()
    logging = CorrelationLogging()
    readiness = health.Readiness()

    # -- every event of the other services, in batches -------------------------------------------

    @handle_all("intake")
    @handle_all("investigation")
    @handle_all("aftercare")
    def ingest(self, events):
        handlers.ingest(self.db, events=events, rules=self.env.rules, now=self.env.now())

    # -- the KPI cells, made (again) from the facts when they are not complete in the chain's zone --

    @timer(interval=10, eager=True)
    def make_kpi_cells(self):
        handlers.make_cells(self.db, policy=self.env.policy, now=self.env.now())

    # -- personal data past the retention (shared.persistence.anonymisation runs retention.KINDS) -----

    @retention_timer()
    def run_retention(self):
        anonymisation.scheduled_run(self.db, retention.KINDS, service=self.name,
                                    retention=self.env.policy.retention.personal_data, now=self.env.now(),
                                    every=anonymisation.interval(self.env.config))

    # -- HTTP ---------------------------------------------------------------------------------------

    @api("GET", "/v1/kpis")
    def kpis(self, request):
        return handlers.kpis(self.db, identity=identity(request), query=query_args(request), policy=self.env.policy,
                             now=self.env.now())

    @api("GET", "/v1/kpis/standard-answers")
    def standard_answers(self, request):
        return handlers.standard_answers(self.db, identity=identity(request), query=query_args(request),
                                         policy=self.env.policy, now=self.env.now())

    @api("GET", "/v1/alerts")
    def alerts(self, request):
        return handlers.alerts_now(self.db, identity=identity(request), query=query_args(request), now=self.env.now())

    @api("GET", "/v1/exports/cases.csv")
    def export_csv(self, request):
        return self._export(request, "csv")

    @api("GET", "/v1/exports/cases.xlsx")
    def export_xlsx(self, request):
        return self._export(request, "xlsx")

    @api("GET", "/v1/exports/case-library.csv")
    def case_library_csv(self, request):
        return self._export(request, "csv", handlers.case_library)

    @api("GET", "/v1/exports/case-library.xlsx")
    def case_library_xlsx(self, request):
        return self._export(request, "xlsx", handlers.case_library)

    def _export(self, request, kind, export=handlers.export):
        mimetype, headers, body = export(self.db, identity=identity(request), query=query_args(request),
                                         policy=self.env.policy, now=self.env.now(), kind=kind)
        return Response(body, content_type=mimetype, headers=headers, direct_passthrough=True)

    @api("GET", "/v1/customers/<customer_ref>")
    def customer_file(self, request, customer_ref):
        return Response(handlers.customer_file(self.db, identity=identity(request), customer_ref=customer_ref,
                                               query=query_args(request)), mimetype="application/json")

    @api("GET", "/v1/access-log")
    def access_log(self, request):
        return handlers.access_log(self.db, identity=identity(request), query=query_args(request),
                                   policy=self.env.policy, now=self.env.now())

    # -- the dashboard: a page and its own assets, public (the token stays in the browser) --------

    @api("GET", "/dashboard", public=True)
    def dashboard_page(self, request):
        return dashboard.page()

    @api("GET", "/dashboard/assets/<name>", public=True)
    def dashboard_asset(self, request, name):
        return dashboard.asset(name)
