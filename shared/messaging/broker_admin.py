"""What AMQP cannot do: vhosts and policies, through RabbitMQ's management API, or through
`rabbitmqctl` on the broker's own machine when the management plugin is off."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from urllib.parse import quote, unquote, urlsplit


class AdminUnavailable(RuntimeError):
    pass


def vhost_of(amqp_uri: str) -> str:
    path = urlsplit(amqp_uri).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class BrokerAdmin:
    def __init__(self, amqp_uri: str, management_url: str | None = None):
        parts = urlsplit(amqp_uri)
        self.amqp_uri = amqp_uri
        self.user = unquote(parts.username or "guest")
        self._password = unquote(parts.password or "guest")
        self.base = (management_url or os.environ.get("RABBITMQ_MANAGEMENT_URL")
                     or f"http://{parts.hostname or '127.0.0.1'}:15672").rstrip("/")
        self.local = (parts.hostname or "127.0.0.1") in ("127.0.0.1", "localhost", "::1")

    # -- transports -------------------------------------------------------------------------

    def _http(self, method: str, path: str, body=None):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"content-type": "application/json"})
        credentials = f"{self.user}:{self._password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def _ctl(self, *args: str) -> str:
        return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True,
                              timeout=60).stdout

    def _either(self, http, ctl, what: str):
        try:
            return http()
        except (urllib.error.URLError, OSError) as management_error:
            if not (self.local and shutil.which("rabbitmqctl")):
                raise AdminUnavailable(
                    f"cannot {what}: the management API at {self.base} did not answer ({management_error}) "
                    "and rabbitmqctl is not available on this machine. Enable the plugin "
                    "(`rabbitmq-plugins enable rabbitmq_management`) or set RABBITMQ_MANAGEMENT_URL.") from None
            try:
                return ctl()
            except (subprocess.CalledProcessError, OSError) as ctl_error:
                detail = getattr(ctl_error, "stderr", "") or ctl_error
                raise AdminUnavailable(f"cannot {what}: rabbitmqctl failed ({str(detail).strip()[:300]})") from None

    # -- operations ---------------------------------------------------------------------------

    def create_vhost(self, name: str) -> None:
        q = quote(name, safe="")

        def http():
            self._http("PUT", f"/api/vhosts/{q}")
            self._http("PUT", f"/api/permissions/{q}/{quote(self.user, safe='')}",
                       {"configure": ".*", "write": ".*", "read": ".*"})

        def ctl():
            self._ctl("add_vhost", name)
            self._ctl("set_permissions", "-p", name, self.user, ".*", ".*", ".*")

        self._either(http, ctl, f"create vhost {name}")

    def delete_vhost(self, name: str) -> None:
        self._either(lambda: self._http("DELETE", f"/api/vhosts/{quote(name, safe='')}"),
                     lambda: self._ctl("delete_vhost", name), f"delete vhost {name}")

    def list_vhosts(self) -> list[str]:
        def ctl():
            lines = [line.strip() for line in self._ctl("list_vhosts", "-q").splitlines()]
            return [line for line in lines if line and line != "name"]

        return self._either(lambda: [v["name"] for v in self._http("GET", "/api/vhosts")], ctl, "list vhosts")

    def set_exchange_policy(self, name: str, pattern: str, definition: dict, priority: int = 0) -> None:
        """A policy on the exchanges of this URI's vhost (e.g. an alternate exchange):
        it changes no declared argument, so nameko's own declarations still match."""
        vhost = vhost_of(self.amqp_uri)
        body = {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": "exchanges"}
        self._either(
            lambda: self._http("PUT", f"/api/policies/{quote(vhost, safe='')}/{quote(name, safe='')}", body),
            lambda: self._ctl("set_policy", "-p", vhost, "--priority", str(priority), "--apply-to", "exchanges",
                              name, pattern, json.dumps(definition)),
            f"set policy {name}")

    def ensure_user(self, name: str, password: str, *, configure: str, write: str, read: str,
                    topics: dict[str, tuple[str, str]]) -> None:
        """Create or update a user (no management tags), its topic permissions, then its
        permissions on this URI's vhost: topic permissions first, since an exchange with none
        lets every routing key through. The password is never logged or printed."""
        vhost = vhost_of(self.amqp_uri)
        v, u = quote(vhost, safe=""), quote(name, safe="")

        def http():
            self._http("PUT", f"/api/users/{u}", {"password": password, "tags": ""})
            for exchange, (topic_write, topic_read) in topics.items():
                self._http("PUT", f"/api/topic-permissions/{v}/{u}",
                           {"exchange": exchange, "write": topic_write, "read": topic_read})
            self._http("PUT", f"/api/permissions/{v}/{u}", {"configure": configure, "write": write, "read": read})

        def ctl():
            # rabbitmqctl takes the password as an argument: visible to this machine's
            # process list for a moment, so prefer the management API.
            try:
                self._ctl("add_user", name, password)
            except subprocess.CalledProcessError:
                self._ctl("change_password", name, password)
            for exchange, (topic_write, topic_read) in topics.items():
                self._ctl("set_topic_permissions", "-p", vhost, name, exchange, topic_write, topic_read)
            self._ctl("set_permissions", "-p", vhost, name, configure, write, read)

        self._either(http, ctl, f"set up broker user {name}")

    def delete_user(self, name: str) -> None:
        self._either(lambda: self._http("DELETE", f"/api/users/{quote(name, safe='')}"),
                     lambda: self._ctl("delete_user", name), f"delete broker user {name}")
