"""The ceilings the benchmarks measure Closeloop against, as runnable processes:

    python -m bench.services http PORT          a bare nameko HTTP endpoint (POST /bare -> 201)
    python -m bench.services bare-consumer      a bare nameko event handler (does nothing)
    python -m bench.services inbox-consumer     a safe handler: schema check + inbox dedup + commit
"""
import sys

from shared.runtime import green

green.patch()

from nameko.events import event_handler  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402
from nameko.web.handlers import http  # noqa: E402

from shared.runtime import config as settings  # noqa: E402
from shared.messaging.consumer import handle_event  # noqa: E402
from shared.persistence.unit_of_work import Database  # noqa: E402


class BareHttp:
    name = "benchhttp"

    @http("POST", "/bare")
    def bare(self, request):
        request.get_data()
        return 201, '{"id": "x"}'


class BareConsumer:
    name = "benchbare"

    @event_handler("intake", "complaint_registered")
    def consume(self, payload):
        pass


class InboxConsumer:
    name = "benchinbox"
    db = Database()

    @handle_event("intake", "complaint_registered")
    def consume(self, event):
        with self.db.unit_of_work():
            pass  # the inbox claim and the commit are the cost measured


def main():
    kind = sys.argv[1]
    config = {"AMQP_URI": settings.amqp_uri(), "max_workers": 20}
    if kind == "http":
        config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{sys.argv[2]}"
        service = BareHttp
    elif kind == "bare-consumer":
        service = BareConsumer
    else:
        config.update(DATABASE_URL=settings.service_database_url("benchinbox"), DB_POOL_SIZE=20)
        service = InboxConsumer
    runner = ServiceRunner(config)
    runner.add_service(service)
    runner.start()
    print("ready", flush=True)
    runner.wait()


if __name__ == "__main__":
    main()
