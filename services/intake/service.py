"""Intake: the branches' front door. Thin entrypoints: authenticate, load, call a handler,
dump. Errors become the JSON error shape in shared.web.http."""
from nameko.rpc import rpc

from services.intake import handlers, openapi, retention
from services.intake.exceptions import RPC_ERRORS
from services.intake.policy import PERMISSIONS
from services.intake.repository import IntakeStore
from shared.messaging.consumer import handle_event
from shared.observability.logs import CorrelationLogging
from shared.persistence import anonymisation, idempotency
from shared.persistence.anonymisation import retention_timer
from shared.persistence.unit_of_work import Database
from shared.runtime.provider import Runtime
from shared.web import health
from shared.web.operations import Operations
from shared.web.http import api, correlation_id, identity, query_args, read_json



CONTACT_CALL = "intake.get_contact"  # what a contact grant is made for
ARCHIVE_CONTACT_CALL = "intake.get_archived_contact"


class IntakeService(Operations):
    openapi_document = openapi.DOCUMENT
    name = "intake"

    db = Database(IntakeStore)
    env = Runtime(customer_ref_key=True)
    logging = CorrelationLogging()
    readiness = health.Readiness()

    def _create(self, request, permission: str, handler):
        """A POST that creates: role (403), then body (413/415/400), then the handler."""
        who = identity(request)
        PERMISSIONS.require(who, permission)
        body = read_json(request)
        key = idempotency.check_key(request.headers.get("Idempotency-Key"))
        return handler(self.db, identity=who, body=body, policy=self.env.policy, rules=self.env.rules,
                       now=self.env.now(), ref_key=self.env.ref_key, idempotency_key=key,
                       causation_id=correlation_id(request))

    @api("POST", "/v1/complaints")
    def post_complaint(self, request):
        status, answer = self._create(request, "complaint:create", handlers.register_complaint)
        return status, {"Location": f"/v1/complaints/{answer['id']}"}, answer

    @api("GET", "/v1/complaints/<complaint_id>")
    def get_complaint(self, request, complaint_id):
        return handlers.get_complaint(self.db, identity=identity(request), complaint_id=complaint_id)

    @api("POST", "/v1/complaints/<complaint_id>/convert")
    def convert_complaint(self, request, complaint_id):
        """An inquiry that proves to be a complaint; the key is checked with the body, in the API's order."""
        return handlers.convert_complaint(
            self.db, identity=identity(request), complaint_id=complaint_id, read_body=lambda: read_json(request),
            policy=self.env.policy, rules=self.env.rules, now=self.env.now(),
            idempotency_key=request.headers.get("Idempotency-Key"), causation_id=correlation_id(request))

    @api("GET", "/v1/complaints")
    def list_complaints(self, request):
        return handlers.list_complaints(self.db, identity=identity(request), query=query_args(request))

    @api("POST", "/v1/sales")
    def post_sale(self, request):
        return self._create(request, "sale:create", handlers.record_sale)

    @api("POST", "/v1/customers/lookup")
    def look_up_customer(self, request):
        """The phone in the body, never in the URL (access logs keep URLs); a read, so no key."""
        return handlers.look_up_customer(self.db, identity=identity(request), read_body=lambda: read_json(request),
                                         ref_key=self.env.ref_key, now=self.env.now())

    @rpc(expected_exceptions=RPC_ERRORS)
    def get_contact(self, grant, record_id, purpose):
        """For investigation and aftercare: the contact of a complaint's or sale's customer,
        for their user. `grant` is `shared.security.auth.issue_grant(user, call=CONTACT_CALL,
        record_id=..., purpose=...)`: minutes long, for this record and purpose only, so the
        user's own token never travels on the bus. Each read and refusal is logged."""
        who = self.env.verifier.grant(grant, call=CONTACT_CALL, record_id=record_id, purpose=purpose)
        return handlers.read_contact(self.db, identity=who, record_id=record_id, purpose=purpose,
                                     now=self.env.now())

    @rpc(expected_exceptions=RPC_ERRORS)
    def get_archived_contact(self, grant, record_id, purpose):
        """For investigation's archive: the contact of a closed complaint's (or a sale's) customer,
        for HQ or an auditor reading the closed case; a grant made for this call. Logged."""
        who = self.env.verifier.grant(grant, call=ARCHIVE_CONTACT_CALL, record_id=record_id, purpose=purpose)
        return handlers.read_contact(self.db, identity=who, record_id=record_id, purpose=purpose,
                                     now=self.env.now(), archived=True)

    # -- a complaint's status follows its case (investigation's events) ------------------------

    @handle_event("investigation", "case_opened")
    @handle_event("investigation", "case_assigned")
    @handle_event("investigation", "case_acknowledged")
    @handle_event("investigation", "sla_paused")
    @handle_event("investigation", "findings_recorded")
    @handle_event("investigation", "case_resolved")
    @handle_event("investigation", "case_reopened")
    @handle_event("investigation", "case_closed")
    @handle_event("investigation", "case_converted")
    def follow_case(self, event):
        handlers.follow_case(self.db, event=event)

    @handle_event("investigation", "legal_hold_set")
    @handle_event("investigation", "legal_hold_released")
    def follow_legal_hold(self, event):
        handlers.follow_legal_hold(self.db, event=event)

    # -- messages to customers, asked for by the services that hold no contact ------------------

    @handle_event("investigation", "customer_message_requested")
    @handle_event("aftercare", "customer_message_requested")
    def send_customer_message(self, event):
        handlers.send_customer_message(self.db, event=event, now=self.env.now())

    # The notification sender (`closeloop relay intake`) calls this with each final outcome.
    message_outcome = staticmethod(handlers.message_outcome)

    # -- retention: personal data anonymised once past the policy's retention, daily -------------

    @retention_timer()
    def run_retention(self):
        anonymisation.scheduled_run(self.db, retention.KINDS, service=self.name,
                                    retention=self.env.policy.retention.personal_data, now=self.env.now(),
                                    every=anonymisation.interval(self.env.config))
