"""Each service on its own broker user (`closeloop bus users`): intake publishes, consumes and
answers RPC under its user, and no service user can bind a routing key it does not consume,
so none can harvest RPC calls (grants, contacts) or another service's events."""
import json
import uuid
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit, urlunsplit

import amqp.exceptions
import kombu
import pytest
import sqlalchemy as sa
from nameko.containers import ServiceContainer
from nameko.rpc import RpcProxy, rpc
from nameko.testing.services import entrypoint_hook

from shared.messaging import consumer, topology
from shared.messaging.broker_admin import BrokerAdmin
from shared.messaging.envelope import build_event
from shared.messaging.inbox import INBOX
from shared.messaging.relay import Publisher
from shared.runtime.provider import verifier
from shared.security import auth
from shared.testing.fixtures import jsonbody, wait_until
from shared.testing.samples import COMPLAINT_REQUEST

pytestmark = pytest.mark.e2e
REPLY = "rpc.reply-{service}-" + "0" * 8 + "-0000-4000-8000-" + "0" * 12


def as_user(amqp_uri: str, user: str, password: str) -> str:
    parts = urlsplit(amqp_uri)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@pytest.fixture(scope="module")
def users(amqp_uri):
    """intake and investigation users on this run's vhost, named uniquely (users are global); made
    once for the module (the management API takes seconds for each), the tests only use them."""
    admin = BrokerAdmin(amqp_uri)
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    passwords = {"intake": uuid.uuid4().hex, "investigation": uuid.uuid4().hex}
    done = topology.declare_users(admin, consumer.all_handlers(), passwords, {"investigation": ["intake"]}, prefix)
    assert not any(p in line for line in done for p in passwords.values())  # never printed
    yield {s: as_user(amqp_uri, prefix + s, p) for s, p in passwords.items()}
    for service in passwords:
        admin.delete_user(prefix + service)


class Investigation:
    """Stands in for investigation: reads a contact for its user through a grant."""

    name = "investigation"
    intake = RpcProxy("intake")

    @rpc
    def contact(self, grant, record_id, purpose):
        return self.intake.get_contact(grant, record_id, purpose)


def test_intake_publishes_consumes_and_answers_rpc_under_its_own_user(
        users, start_service, start_relay, database_factory, bus_listener, http, token, amqp_uri):
    url = database_factory("intake")
    events = bus_listener("intake.events", "complaint_registered")
    intake = start_service("intake", database_url=url, amqp=users["intake"])
    start_relay(url, amqp=users["intake"])
    front_desk = {"Authorization": f"Bearer {token('front_desk', branch='SH001')}"}
    created = jsonbody(http.post(intake.url("/v1/complaints"), json=COMPLAINT_REQUEST, headers=front_desk, timeout=10))
    [registered] = events.wait_for(lambda m: m["body"]["payload"]["complaint_id"] == created["id"], timeout=20)
    assert registered["body"]["type"] == "complaint_registered"

    opened = build_event("case_opened", {"case_id": created["id"], "complaint_id": created["id"]},
                         branch_code="SH001", correlation_id=created["id"], sequence=1,
                         occurred_at=datetime.now(timezone.utc), source="investigation")
    publisher = Publisher(users["investigation"])
    try:
        publisher.publish_batch([("investigation.events", "case_opened", json.dumps(opened), opened["event_id"])])
    finally:
        publisher.close()
    engine = sa.create_engine(url)
    try:
        def handled():
            with engine.connect() as conn:
                return opened["event_id"] in set(conn.execute(sa.select(INBOX.c.event_id)).scalars())
        wait_until(handled, "intake to take investigation's event under its own user", timeout=20)
    finally:
        engine.dispose()

    container = ServiceContainer(Investigation, {"AMQP_URI": users["investigation"]})
    container.start()
    try:
        why = "calling back about the allergy"
        user = verifier(None).identity(token("investigator", branch="SH001"))
        grant = auth.issue_grant(user, call="intake.get_contact", record_id=created["id"], purpose=why)
        with entrypoint_hook(container, "contact") as contact:
            assert contact(grant, created["id"], why)["phone"] == "13812346138"
    finally:
        container.stop()


def refused(uri: str, *bindings) -> dict:
    """For each (queue, exchange, routing key): True when the broker refused the binding."""
    answers = {}
    with kombu.Connection(uri, connect_timeout=5) as conn:
        for queue_name, exchange, key in bindings:
            channel = conn.channel()
            try:
                channel.queue_declare(queue_name, auto_delete=True)
                channel.queue_bind(queue_name, exchange, key)
                answers[(exchange, key)] = False
                channel.queue_delete(queue_name)
            except amqp.exceptions.AccessRefused:
                answers[(exchange, key)] = True
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - the broker closed it with the refusal
                    pass
    return answers


def test_no_service_user_can_bind_what_it_does_not_consume(users, amqp_uri):
    intake_queue, investigation_queue = REPLY.format(service="intake"), REPLY.format(service="investigation")
    assert refused(users["intake"],
                   (intake_queue, "nameko-rpc", "#"),
                   (intake_queue, "nameko-rpc", "*.*"),
                   (intake_queue, "nameko-rpc", "intake.get_contact.#"),
                   (intake_queue, "investigation.events", "#"),
                   (intake_queue, "investigation.events", "case_opened"),
                   (intake_queue, "aftercare.events", "visit_completed"),
                   (intake_queue, "reporting.events", "#")) == {
        ("nameko-rpc", "#"): True, ("nameko-rpc", "*.*"): True, ("nameko-rpc", "intake.get_contact.#"): True,
        ("investigation.events", "#"): True, ("investigation.events", "case_opened"): False,
        ("aftercare.events", "visit_completed"): True, ("reporting.events", "#"): True}
    # investigation calls intake, yet cannot listen to intake's calls
    assert refused(users["investigation"],
                   (investigation_queue, "nameko-rpc", "intake.*"),
                   (investigation_queue, "nameko-rpc", "intake.get_contact"),
                   (investigation_queue, "nameko-rpc", "investigation.*")) == {
        ("nameko-rpc", "intake.*"): True, ("nameko-rpc", "intake.get_contact"): True,
        ("nameko-rpc", "investigation.*"): False}


def test_no_service_user_can_route_rpc_calls_into_an_exchange_of_its_own(users):
    with kombu.Connection(users["intake"], connect_timeout=5) as conn:
        channel = conn.channel()
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.exchange_bind("intake.events", "nameko-rpc", "#")
