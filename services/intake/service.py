"""Intake: the branches' front door. Thin entrypoints: authenticate, load, call a handler,
dump. Errors become the JSON error shape in shared.web.http."""
from nameko.dependency_providers import Config
from nameko.rpc import rpc
from werkzeug.wrappers import Response

from services.intake import handlers, openapi
from services.intake.dependencies import IntakeRuntime
from services.intake.exceptions import RPC_ERRORS
from shared.messaging import topology, consumer
from shared.web import health
from shared.persistence import idempotency
from shared.runtime import provider as runtime
from shared.persistence.db import Database
from shared.web.errors import Unauthorized
from shared.web.http import api, correlation_id, identity, json_response, query_args, read_json
from shared.observability.logs import CorrelationLogging


class IntakeService:
    name = "intake"

    db = Database()
    env = IntakeRuntime()
    config = Config()
    logging = CorrelationLogging()

    def _create(self, request, permission: str, handler):
        """A POST that creates: role (403), then body (413/415/400), then the handler."""
        who = identity(request)
        who.require(permission)
        body = read_json(request)
        key = idempotency.check_key(request.headers.get("Idempotency-Key"))
        return handler(self.db, identity=who, body=body, policy=self.env.policy, now=self.env.now(),
                       ref_key=self.env.ref_key, idempotency_key=key, causation_id=correlation_id(request))

    @api("POST", "/v1/complaints")
    def post_complaint(self, request):
        status, answer = self._create(request, "complaint:create", handlers.register_complaint)
        return status, {"Location": f"/v1/complaints/{answer['id']}"}, answer

    @api("GET", "/v1/complaints/<complaint_id>")
    def get_complaint(self, request, complaint_id):
        return handlers.get_complaint(self.db, identity=identity(request), complaint_id=complaint_id)

    @api("GET", "/v1/complaints")
    def list_complaints(self, request):
        return handlers.list_complaints(self.db, identity=identity(request), query=query_args(request))

    @api("POST", "/v1/sales")
    def post_sale(self, request):
        return self._create(request, "sale:create", handlers.record_sale)

    @rpc(expected_exceptions=RPC_ERRORS)
    def get_contact(self, token, record_id, purpose):
        """For investigation and aftercare: the contact of a complaint's or sale's customer,
        read with the end user's own token, logged with its purpose."""
        if not isinstance(token, str):
            raise Unauthorized("the token must be a string")
        who = runtime.verifier(self.config.get("POLICY_FILE")).identity(token)
        return handlers.read_contact(self.db, identity=who, record_id=str(record_id), purpose=purpose,
                                     now=self.env.now())

    @api("GET", "/health", public=True)
    def health(self, request):
        status, body = health.report(self.name, self.db.engine, self.config["AMQP_URI"])
        return status, body

    @api("GET", "/metrics", public=True)
    def metrics(self, request):
        text = health.metrics_text(self.name, self.db.engine, self.config["AMQP_URI"],
                                   consumer.handlers_of(IntakeService, topology.retry_delays(self.config)))
        return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")

    @api("GET", "/openapi.json", public=True)
    def openapi(self, request):
        return json_response(openapi.DOCUMENT)
