"""Aftercare: owns visits. Thin entrypoints: authenticate, call a handler, answer. Plans return
visits from the sales intake records and satisfaction follow-ups from the cases investigation
resolves, runs each visit's process (its timers: the message after the calls, the visit given
up), and serves the agents' queue and their claims on the visits they work. Errors become the
JSON error shape in shared.web.http."""
from nameko.rpc import RpcProxy
from nameko.timer import timer

from services.aftercare import handlers, openapi, retention
from services.aftercare.dependencies import load_process, visit_contact_reader
from services.aftercare.repository import AftercareStore
from shared.messaging.consumer import handle_event
from shared.observability.logs import CorrelationLogging
from shared.persistence import anonymisation
from shared.persistence.anonymisation import retention_timer
from shared.persistence.unit_of_work import Database
from shared.runtime.provider import ProcessFiles, Runtime
from shared.web import health
from shared.web.http import api, correlation_id, identity, query_args, read_json
from shared.web.operations import Operations
from shared.workflow import polling


class AftercareService(Operations):
    openapi_document = openapi.DOCUMENT
    name = "aftercare"

    @staticmethod
    def preflight(config: dict) -> None:
        """Before the start (`closeloop serve`): the process file loads, else InvalidProcess
        naming every problem."""
        load_process(config.get("PROCESS_DIR"), None)

    db = Database(AftercareStore)
    env = Runtime()
    process = ProcessFiles(load_process)  # loaded and checked at start; PROCESS_DIR: another directory
    logging = CorrelationLogging()
    readiness = health.Readiness()
    intake = RpcProxy("intake")  # the contact holder

    # -- plans: what intake records and investigation resolves ---------------------------------------

    @handle_event("intake", "sale_recorded")
    def plan_sale(self, event):
        handlers.plan_sale(self.db, event=event, process=self.process, policy=self.env.policy, rules=self.env.rules,
                           now=self.env.now())

    @handle_event("investigation", "case_resolved")
    def plan_follow_up(self, event):
        handlers.plan_case_follow_up(self.db, event=event, process=self.process, policy=self.env.policy,
                                     rules=self.env.rules, now=self.env.now())

    @handle_event("investigation", "case_reopened")
    def cancel_follow_up(self, event):
        handlers.cancel_follow_up(self.db, event=event, process=self.process, now=self.env.now())

    @handle_event("intake", "customer_message_sent")
    @handle_event("intake", "customer_message_failed")
    def message_outcome(self, event):
        handlers.message_outcome(self.db, event=event, now=self.env.now())

    @handle_event("investigation", "legal_hold_set")
    @handle_event("investigation", "legal_hold_released")
    def follow_legal_hold(self, event):
        handlers.follow_legal_hold(self.db, event=event, now=self.env.now())

    # -- the visits' timers ---------------------------------------------------------------------------

    @timer(interval=1)
    def fire_timers(self):
        polling.fire_rounds(self.name, lambda limit: handlers.fire_timers(
            self.db, process=self.process, policy=self.env.policy, now=self.env.now(), limit=limit))

    # -- personal data past the retention (shared.persistence.anonymisation runs retention.KINDS) -----

    @retention_timer()
    def run_retention(self):
        anonymisation.scheduled_run(self.db, retention.KINDS, service=self.name,
                                    retention=self.env.policy.retention.personal_data, now=self.env.now(),
                                    every=anonymisation.interval(self.env.config))

    # -- HTTP ---------------------------------------------------------------------------------------

    @api("GET", "/v1/visits")
    def list_visits(self, request):
        return handlers.list_visits(self.db, identity=identity(request), query=query_args(request),
                                    policy=self.env.policy, now=self.env.now())

    @api("GET", "/v1/visits/<visit_id>")
    def get_visit(self, request, visit_id):
        return handlers.get_visit(self.db, identity=identity(request), visit_id=visit_id, policy=self.env.policy,
                                  read_contact=visit_contact_reader(self.intake, handlers.CONTACT_WAIT),
                                  now=self.env.now(), query=query_args(request))

    @api("POST", "/v1/visits/<visit_id>/claim")
    def claim_visit(self, request, visit_id):
        return handlers.claim_visit(self.db, identity=identity(request), visit_id=visit_id,
                                    read_body=lambda: read_json(request) if request.get_data() else {},
                                    policy=self.env.policy, rules=self.env.rules, now=self.env.now())

    @api("DELETE", "/v1/visits/<visit_id>/claim")
    def release_visit(self, request, visit_id):
        return handlers.release_visit(self.db, identity=identity(request), visit_id=visit_id, policy=self.env.policy,
                                      now=self.env.now())

    @api("POST", "/v1/visits/<visit_id>/attempts")
    def record_attempt(self, request, visit_id):
        return handlers.record_attempt(self.db, identity=identity(request), visit_id=visit_id,
                                       read_body=lambda: read_json(request), process=self.process,
                                       policy=self.env.policy, rules=self.env.rules, now=self.env.now(),
                                       causation_id=correlation_id(request))

    # -- operations: /health, /metrics, /openapi.json come from shared.web.operations ------------

    def more_shared_metrics(self) -> str:
        return polling.timer_gauges(self.name, self.db.engine, self.process.engine, self.env.now())
