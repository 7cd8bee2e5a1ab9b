"""The endpoints every service answers besides its own API: readiness, Prometheus metrics and
its OpenAPI document. A service class inherits them (`class IntakeService(Operations)`), sets
`openapi_document`, and has `db`, `env` and `readiness` dependencies; it may add gauges of its
own state to /metrics/shared (`more_shared_metrics`)."""
from __future__ import annotations

from werkzeug.wrappers import Response

from shared.calendar.clock import DemoClock
from shared.messaging import consumer
from shared.messaging.topology import retry_delays
from shared.web import health
from shared.web.http import api, json_response

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Operations:
    openapi_document: dict = {}

    @api("GET", "/health/ready", public=True)
    def ready(self, request):
        return self._readiness()

    @api("GET", "/health", public=True)
    def health(self, request):  # the older name of /health/ready, same answer
        return self._readiness()

    def _readiness(self):
        """The readiness report; a service on the demo clock (development) also says so, with
        its time: `closeloop demo` checks that every service reads the clock it moves."""
        code, body = self.readiness(self.db.engine)
        if isinstance(self.env.clock, DemoClock):
            return code, {**body, "demo_clock": self.env.clock.view()}
        return code, body

    @api("GET", "/metrics", public=True)
    def metrics(self, request):
        return Response(health.replica_metrics_text(self.name), content_type=PROMETHEUS_TEXT)

    @api("GET", "/metrics/shared", public=True)
    def shared_metrics(self, request):
        config = self.env.config
        text = health.shared_metrics_text(self.name, self.db.engine, config["AMQP_URI"],
                                          consumer.handlers_of(type(self), retry_delays(config)))
        return Response(text + self.more_shared_metrics(), content_type=PROMETHEUS_TEXT)

    def more_shared_metrics(self) -> str:
        """Prometheus text of the service's own shared state ("" for none)."""
        return ""

    @api("GET", "/openapi.json", public=True)
    def openapi(self, request):
        return json_response(self.openapi_document)
