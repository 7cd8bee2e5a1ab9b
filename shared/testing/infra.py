"""Where the tests' RabbitMQ and PostgreSQL come from, as `make test` promises:
AMQP_URI / DATABASE_URL when set; else the local defaults of `make dev` when they answer;
else containers from testcontainers when a Docker engine answers; else a clear failure."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
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
    from testcontainers.core.waiting_utils import wait_for_logs

    postgres = PostgresContainer("postgres:15", username="postgres", password="postgres", dbname="postgres")
    rabbit = DockerContainer("rabbitmq:3.12-management").with_exposed_ports(5672, 15672)
    postgres.start()
    rabbit.start()
    wait_for_logs(rabbit, "Server startup complete", timeout=120)
    host = rabbit.get_container_host_ip()
    amqp = f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}//"
    database = f"postgresql://postgres:postgres@{postgres.get_container_host_ip()}:{postgres.get_exposed_port(5432)}"
    return Infra(amqp, database, "testcontainers", f"http://{host}:{rabbit.get_exposed_port(15672)}",
                 [postgres, rabbit])


# --- one vhost per test run ------------------------------------------------------------------

def _management(infra: Infra, method: str, path: str, body: dict | None = None) -> None:
    parts = urlsplit(infra.amqp_uri)
    base = infra.management_url or f"http://{parts.hostname or '127.0.0.1'}:15672"
    request = urllib.request.Request(base.rstrip("/") + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json"})
    credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    urllib.request.urlopen(request, timeout=5).close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "127.0.0.1") in ("127.0.0.1", "localhost", "::1")


def create_vhost(infra: Infra, name: str) -> str:
    """Create the vhost and return the AMQP URI pointing at it."""
    user = urlsplit(infra.amqp_uri).username or "guest"
    try:
        _management(infra, "PUT", f"/api/vhosts/{quote(name, safe='')}")
        _management(infra, "PUT", f"/api/permissions/{quote(name, safe='')}/{quote(user, safe='')}",
                    {"configure": ".*", "write": ".*", "read": ".*"})
    except (urllib.error.URLError, OSError) as management_error:
        if not (shutil.which("rabbitmqctl") and _is_local(infra.amqp_uri)):
            raise InfraMissing(f"cannot create a test vhost: the management API did not answer "
                               f"({management_error}) and rabbitmqctl is not available here. Enable it "
                               f"with `rabbitmq-plugins enable rabbitmq_management` or set "
                               f"RABBITMQ_MANAGEMENT_URL.") from None
        _rabbitmqctl("add_vhost", name)
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    parts = urlsplit(infra.amqp_uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), parts.query, ""))


def list_vhosts(infra: Infra) -> list[str]:
    parts = urlsplit(infra.amqp_uri)
    base = infra.management_url or f"http://{parts.hostname or '127.0.0.1'}:15672"
    request = urllib.request.Request(base.rstrip("/") + "/api/vhosts")
    credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return [v["name"] for v in json.loads(response.read())]
    except (urllib.error.URLError, OSError):
        if shutil.which("rabbitmqctl") and _is_local(infra.amqp_uri):
            out = subprocess.run(["rabbitmqctl", "list_vhosts", "-q"], check=True, capture_output=True,
                                 text=True, timeout=60).stdout
            return [line.strip() for line in out.splitlines() if line.strip() and line.strip() != "name"]
        return []


def delete_vhost(infra: Infra, name: str) -> None:
    try:
        _management(infra, "DELETE", f"/api/vhosts/{quote(name, safe='')}")
    except (urllib.error.URLError, OSError):
        if shutil.which("rabbitmqctl") and _is_local(infra.amqp_uri):
            _rabbitmqctl("delete_vhost", name)
