"""Investigation: owns cases. Thin entrypoints: authenticate, call a handler, answer. Opens a
case for every registered complaint (the complaint case process), every suggestion or praise
(the feedback case process) and every inquiry (the inquiry case process; converted in place when
intake registers it again as a complaint), fires the processes' timers, and serves cases, tasks
and the chain's standard answers. Errors become the JSON error shape in shared.web.http."""
from nameko.rpc import RpcProxy
from nameko.timer import timer

from services.investigation import handlers, openapi, retention
from services.investigation.dependencies import archived_contact_reader, load_processes
from services.investigation.repository import InvestigationStore
from shared.messaging.consumer import handle_event
from shared.observability.logs import CorrelationLogging
from shared.persistence import anonymisation
from shared.persistence.anonymisation import retention_timer
from shared.persistence.unit_of_work import Database
from shared.runtime.provider import ProcessFiles, Runtime
from shared.web import health
from shared.web.operations import Operations
from shared.web.http import api, correlation_id, identity, query_args, read_json
from shared.workflow import polling


class InvestigationService(Operations):
    openapi_document = openapi.DOCUMENT
    name = "investigation"

    @staticmethod
    def preflight(config: dict) -> None:
        """Before the start (`closeloop serve`): the process files load, else InvalidProcess
        naming every problem."""
        load_processes(config.get("PROCESS_DIR"), None)

    db = Database(InvestigationStore)
    env = Runtime()
    processes = ProcessFiles(load_processes)  # loaded and checked at start; PROCESS_DIR: another directory
    logging = CorrelationLogging()
    readiness = health.Readiness()
    intake = RpcProxy("intake")  # the contact holder (the archive's contact)

    # -- cases are opened by what intake registers --------------------------------------------------

    @handle_event("intake", "complaint_registered")
    @handle_event("intake", "feedback_registered")
    def open_case(self, event):
        handlers.open_case(self.db, event=event, processes=self.processes, policy=self.env.policy,
                           rules=self.env.rules, now=self.env.now())

    @handle_event("intake", "customer_message_sent")
    @handle_event("intake", "customer_message_failed")
    def message_outcome(self, event):
        handlers.message_outcome(self.db, event=event, now=self.env.now())

    # -- aftercare's follow-ups close or reopen a resolved case; an adverse reaction opens one -------

    @handle_event("aftercare", "visit_completed")
    @handle_event("aftercare", "visit_abandoned")
    @handle_event("aftercare", "dissatisfaction_reported")
    def follow_up_outcome(self, event):
        handlers.follow_up_outcome(self.db, event=event, processes=self.processes, policy=self.env.policy,
                                   rules=self.env.rules, now=self.env.now())

    @handle_event("aftercare", "adverse_reaction_reported")
    def open_adverse_reaction_case(self, event):
        handlers.open_adverse_reaction_case(self.db, event=event, processes=self.processes, policy=self.env.policy,
                                            rules=self.env.rules, now=self.env.now())

    # -- the processes' timers (SLA warnings, breaches, escalations) ------------------------------

    @timer(interval=1)
    def fire_timers(self):
        polling.fire_rounds(self.name, lambda limit: handlers.fire_timers(
            self.db, processes=self.processes, rules=self.env.rules, now=self.env.now(), limit=limit))

    # -- personal data past the retention (shared.persistence.anonymisation runs retention.KINDS) -----

    @retention_timer()
    def run_retention(self):
        anonymisation.scheduled_run(self.db, retention.KINDS, service=self.name,
                                    retention=self.env.policy.retention.personal_data, now=self.env.now(),
                                    every=anonymisation.interval(self.env.config))

    # -- HTTP ---------------------------------------------------------------------------------------

    @api("GET", "/v1/cases")
    def list_cases(self, request):
        return handlers.list_cases(self.db, identity=identity(request), query=query_args(request),
                                   now=self.env.now())

    @api("GET", "/v1/cases/<case_id>")
    def get_case(self, request, case_id):
        return handlers.get_case(self.db, identity=identity(request), case_id=case_id, now=self.env.now())

    @api("POST", "/v1/cases/<case_id>/tasks/<task>")
    def complete_task(self, request, case_id, task):
        return handlers.complete_task(self.db, identity=identity(request), case_id=case_id, task=task,
                                      read_body=lambda: read_json(request), processes=self.processes,
                                      policy=self.env.policy, rules=self.env.rules, now=self.env.now(),
                                      causation_id=correlation_id(request))

    @api("POST", "/v1/cases/<case_id>/pause")
    def pause(self, request, case_id):
        return handlers.pause(self.db, identity=identity(request), case_id=case_id,
                              read_body=lambda: read_json(request), processes=self.processes,
                              rules=self.env.rules, now=self.env.now(), causation_id=correlation_id(request))

    @api("POST", "/v1/cases/<case_id>/resume")
    def resume(self, request, case_id):
        return handlers.resume(self.db, identity=identity(request), case_id=case_id,
                               read_body=lambda: read_json(request), processes=self.processes,
                               policy=self.env.policy, rules=self.env.rules, now=self.env.now(),
                               causation_id=correlation_id(request))

    @api("GET", "/v1/archive/cases/<case_id>")
    def read_archive(self, request, case_id):
        return handlers.read_archive(self.db, identity=identity(request), case_id=case_id,
                                     read_query=lambda: query_args(request),
                                     read_contact=archived_contact_reader(self.intake), now=self.env.now(),
                                     causation_id=correlation_id(request))

    @api("GET", "/v1/cases/<case_id>/contact")
    def read_contact(self, request, case_id):
        return handlers.read_contact(self.db, identity=identity(request), case_id=case_id,
                                     read_query=lambda: query_args(request),
                                     read_contact=handlers.case_contact_reader(self.intake), now=self.env.now())

    @api("PUT", "/v1/cases/<case_id>/legal-hold")
    def set_legal_hold(self, request, case_id):
        return handlers.set_legal_hold(self.db, identity=identity(request), case_id=case_id,
                                       read_body=lambda: read_json(request), now=self.env.now(),
                                       causation_id=correlation_id(request))

    @api("DELETE", "/v1/cases/<case_id>/legal-hold")
    def release_legal_hold(self, request, case_id):
        return handlers.release_legal_hold(self.db, identity=identity(request), case_id=case_id,
                                           now=self.env.now(), causation_id=correlation_id(request))

    @api("GET", "/v1/tasks")
    def list_tasks(self, request):
        return handlers.list_tasks(self.db, identity=identity(request), query=query_args(request), now=self.env.now())

    @api("GET", "/v1/standard-answers")
    def list_standard_answers(self, request):
        return handlers.list_standard_answers(self.db, identity=identity(request), query=query_args(request),
                                              policy=self.env.policy, rules=self.env.rules, now=self.env.now())

    # -- operations: /health, /metrics, /openapi.json come from shared.web.operations ------------

    def more_shared_metrics(self) -> str:
        return polling.timer_gauges(self.name, self.db.engine, self.processes.engine, self.env.now())

    # -- staff notices for the console ---------------------------------------------------------------

    @api("GET", "/v1/notifications")
    def list_notices(self, request):
        return handlers.list_notices(self.db, identity=identity(request), query=query_args(request))
