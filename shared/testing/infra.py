"""Where the tests' RabbitMQ and PostgreSQL come from, as `make test` promises:
AMQP_URI / DATABASE_URL when set; else the local defaults of `make dev` when they answer;
else containers from testcontainers when a Docker engine answers; else a clear failure.
CLOSELOOP_TEST_INFRA=containers skips the first two, so that the containers path is exercised."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from shared.runtime.config import DEFAULT_AMQP_URI, DEFAULT_DATABASE_URL

HOW_TO = (
    "The integration and end-to-end tests need a real RabbitMQ and PostgreSQL. Provide one of:\n"
    "  - AMQP_URI=amqp://user:pass@host:5672// and DATABASE_URL=postgresql://user@host:5432 "
    "(a server where the user may create databases, and a RabbitMQ with the management plugin "
    "or rabbitmqctl on this machine, so each run gets its own vhost);\n"
    "  - local servers on the defaults (RabbitMQ 127.0.0.1:5672 guest/guest, PostgreSQL "
    "127.0.0.1:5432 user postgres);\n"
    "  - a running Docker engine (testcontainers starts both)."
)


class InfraMissing(RuntimeError):
    pass


@dataclass
class Infra:
    amqp_uri: str
    database_url: str
    origin: str
    management_url: str | None = None
    _containers: list = field(default_factory=list)

    def stop(self) -> None:
        for container in self._containers:
            container.stop()


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def resolve(env=os.environ) -> Infra:
    forced = env.get("CLOSELOOP_TEST_INFRA", "")
    if forced not in ("", "containers"):
        raise InfraMissing(f"CLOSELOOP_TEST_INFRA={forced!r}: the only value is 'containers'.")
    if forced:
        if not _docker_answers():
            raise InfraMissing("CLOSELOOP_TEST_INFRA=containers but no Docker engine answers "
                               "(start one, or unset CLOSELOOP_TEST_INFRA).")
        return _containers()
    amqp, database = env.get("AMQP_URI"), env.get("DATABASE_URL")
    if amqp or database:
        amqp, database = amqp or DEFAULT_AMQP_URI, database or DEFAULT_DATABASE_URL
        missing = [name for name, url, port in (("AMQP_URI", amqp, 5672), ("DATABASE_URL", database, 5432))
                   if not _answers(url, port)]
        if missing:
            raise InfraMissing(f"{' and '.join(missing)} set but not answering ({amqp}, {database}).\n{HOW_TO}")
        return Infra(amqp, database, "environment", env.get("RABBITMQ_MANAGEMENT_URL"))
    if _answers(DEFAULT_AMQP_URI, 5672) and _answers(DEFAULT_DATABASE_URL, 5432):
        return Infra(DEFAULT_AMQP_URI, DEFAULT_DATABASE_URL, "local", env.get("RABBITMQ_MANAGEMENT_URL"))
    if _docker_answers():
        return _containers()
    raise InfraMissing(f"No RabbitMQ/PostgreSQL found and no Docker engine answers.\n{HOW_TO}")


def _containers() -> Infra:
    # RabbitMQ as a plain container: testcontainers' RabbitMQ module needs pika to wait.
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer

    postgres = PostgresContainer("postgres:15", username="postgres", password="postgres", dbname="postgres")
    rabbit = DockerContainer("rabbitmq:3.12-management").with_exposed_ports(5672, 15672)
    started = []
    try:
        for container in (postgres, rabbit):
            container.start()
            started.append(container)
        host = rabbit.get_container_host_ip()
        amqp = f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}//"
        management = f"http://{host}:{rabbit.get_exposed_port(15672)}"
        _wait_for_broker(amqp, management, timeout=120)
    except BaseException:
        for container in started:  # no container left behind by a start that failed
            container.stop()
        raise
    database = f"postgresql://postgres:postgres@{postgres.get_container_host_ip()}:{postgres.get_exposed_port(5432)}"
    # The management API is on a mapped port, not beside AMQP's: `bus declare` in this process
    # and in the services the tests start find it here.
    os.environ["RABBITMQ_MANAGEMENT_URL"] = management
    return Infra(amqp, database, "testcontainers", management, [postgres, rabbit])


def _wait_for_broker(amqp: str, management: str, timeout: float) -> None:
    """Until both the management API and an AMQP login answer: the log line that says so
    differs between RabbitMQ versions, and Docker's port proxy accepts connections early."""
    import base64
    import time
    import urllib.request

    import kombu

    auth = "Basic " + base64.b64encode(b"guest:guest").decode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(management + "/api/overview", headers={"Authorization": auth})
            urllib.request.urlopen(request, timeout=3).close()
            with kombu.Connection(amqp, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise InfraMissing(f"the RabbitMQ container did not answer within {timeout:.0f} s: {exc}") from None
            time.sleep(1)


# --- one vhost per test run ------------------------------------------------------------------

def _admin(infra: Infra):
    from shared.messaging.broker_admin import BrokerAdmin

    return BrokerAdmin(infra.amqp_uri, infra.management_url)


def create_vhost(infra: Infra, name: str) -> str:
    """Create the vhost and return the AMQP URI pointing at it."""
    from shared.messaging.broker_admin import AdminUnavailable

    try:
        _admin(infra).create_vhost(name)
    except AdminUnavailable as exc:
        raise InfraMissing(f"cannot create a test vhost: {exc}") from None
    parts = urlsplit(infra.amqp_uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), parts.query, ""))


def list_vhosts(infra: Infra) -> list[str]:
    from shared.messaging.broker_admin import AdminUnavailable

    try:
        return _admin(infra).list_vhosts()
    except AdminUnavailable:
        return []


def delete_vhost(infra: Infra, name: str) -> None:
    _admin(infra).delete_vhost(name)
