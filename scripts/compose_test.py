"""`make compose-test`: docker-compose.yml for real, through the gateway.

Builds the image, starts the project under a name of its own, waits (bounded) until intake,
investigation and aftercare answer through the gateway and aftercare's relay is healthy, posts the
README's first complaint exactly as the README writes it (token included), scales intake to 2 and
shows that both replicas answer, then kills one replica (SIGKILL; its restart policy brings it
back) while posting in a loop: every post must still succeed, and be stored once. Then
investigation: a complaint posted through the gateway opens its case, read through the gateway by
the branch's store manager (bounded poll) until it waits on `assign`; investigation scaled to 2,
both replicas healthy and both answering the gateway's reads. Then aftercare: a sale of a hair
colour posted through the gateway plans its return visit (an allergy check, due 2 days after the
sale), listed through the gateway for the branch's aftercare agent (bounded poll). Tears the
project down at the end, also on failure.

`--fault` measures instead of asserting: posts in a loop while the only intake replica is
killed and brought back by its restart policy, then the same with two replicas, and prints
how many posts were refused.

Needs a Docker engine and `docker compose` (v2) or `docker-compose` (v1). Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_PORT = 8080
COMPLAINT = {"kind": "complaint", "channel": "front_desk",
             "customer": {"name": "王女士", "phone": "13812346138", "language": "zh"},
             "description": "染发后头皮发红", "occurred_at": "2026-01-05T15:00:00+08:00",
             "service": {"code": "HAIR-DYE", "name": "染发"}}
SHANGHAI = timezone(timedelta(hours=8))  # the branches' zone in the bundled policy (no DST)


class Failed(Exception):
    pass


def say(message: str) -> None:
    print(f"compose-test: {message}", flush=True)


def run(argv, *, check=True, timeout=600, env=None, quiet=False) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise Failed(f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if not quiet and done.stdout.strip():
        print(done.stdout.rstrip(), flush=True)
    return done


def compose_command() -> list[str]:
    if shutil.which("docker") is None:
        raise Failed("no `docker` command: install Docker (engine and compose) to run this test")
    try:
        engine = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        engine = None
    if engine is None or engine.returncode != 0:
        detail = engine.stderr.strip() if engine else "`docker info` did not answer in 30 s"
        raise Failed(f"no Docker engine answers ({detail}); start one (dockerd) and run again")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise Failed("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


def free_port(preferred: int | None = None) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Project:
    def __init__(self, name: str):
        self.compose = compose_command()
        self.name = name
        # Host ports of the project's own, so that it runs beside servers already on this machine.
        self.gateway_port = free_port(README_PORT)
        self.env = dict(os.environ, COMPOSE_PROJECT_NAME=name,
                        CLOSELOOP_GATEWAY_PORT=str(self.gateway_port),
                        CLOSELOOP_RABBITMQ_PORT=str(free_port()),
                        CLOSELOOP_RABBITMQ_MANAGEMENT_PORT=str(free_port()),
                        CLOSELOOP_POSTGRES_PORT=str(free_port()))
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        # The load steps post far faster than any till: intake gets the bundled policy with its
        # message limits out of reach (an override file beside the project's own compose file).
        from shared.testing.samples import policy_for_load

        self.scratch = tempfile.mkdtemp(prefix="closeloop-compose-test-")
        policy = policy_for_load(self.scratch)
        override = Path(self.scratch) / "load-policy.yml"
        override.write_text("services:\n  intake:\n"
                            "    environment:\n      CLOSELOOP_POLICY_FILE: /app/load-policy.yaml\n"
                            f"    volumes:\n      - {policy}:/app/load-policy.yaml:ro\n", encoding="utf-8")
        self.files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]

    def __call__(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return run([*self.compose, *self.files, "-p", self.name, *args], env=self.env, **kwargs)

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service, quiet=True).stdout.split()

    def health(self, container: str) -> str:
        done = run(["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    container], check=False, quiet=True)
        return done.stdout.strip()

    def down(self) -> None:
        say("tearing down")
        self("down", "-v", "--remove-orphans", "-t", "20", check=False, quiet=True, timeout=300)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def show_state(self) -> None:
        self("ps", check=False)
        for service in ("migrate", "bus-declare", "intake", "intake-relay", "investigation",
                        "investigation-relay", "aftercare", "aftercare-relay", "gateway"):
            logs = self("logs", "--no-color", "--tail", "15", service, check=False, quiet=True)
            print(logs.stdout.rstrip(), flush=True)


def until(what: str, check, deadline_s: float, every: float = 1.0):
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Failed(f"gave up after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every)


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout=10):
    """(status, JSON body); status 0 when the connection itself failed."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def ready(project: Project, service: str = "intake"):
    # /health/<service> is that service's /health/ready through the gateway.
    status, body = http("GET", f"{project.gateway}/health/{service}", timeout=5)
    return status == 200 and isinstance(body, dict) and body.get("status") == "ok"


def replicas_healthy(project: Project, count: int, service: str = "intake"):
    found = project.containers(service)
    states = [project.health(c) for c in found]
    return found if len(found) == count and all(s == "running healthy" for s in states) else None


def readme_first_complaint(gateway: str) -> str:
    """The README's shell block under "Your first complaint", only the port moved if 8080 was taken."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your first complaint", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    if f"http://127.0.0.1:{README_PORT}/v1/complaints" not in block:
        raise Failed("the README's first complaint no longer posts to the gateway at "
                     f"http://127.0.0.1:{README_PORT}: update this test with it")
    return block.replace(f"http://127.0.0.1:{README_PORT}", gateway)


def post_readme_complaint(project: Project) -> dict:
    done = run(["bash", "-euo", "pipefail", "-c", readme_first_complaint(project.gateway)], quiet=True, timeout=60)
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise Failed(f"the README's first complaint did not answer JSON: {done.stdout[:500]!r}") from None
    if not re.fullmatch(r"SH001-\d{8}-\d{4}", str(answer.get("reference"))):
        raise Failed(f"the README's first complaint was not accepted: {answer}")
    return answer


def token(role: str = "front_desk", branch: str = "SH001") -> str:
    done = run([str(ROOT / ".venv/bin/closeloop"), "token", "issue", "--role", role, "--branch", branch],
               quiet=True)
    return done.stdout.strip()


def in_container(container: str, port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET to the replica itself, from inside its container."""
    script = ("import urllib.request, urllib.error\n"
              "try:\n"
              f"    answer = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5)\n"
              "except urllib.error.HTTPError as exc:\n"
              "    answer = exc\n"
              "print(answer.status); print(answer.read().decode())")
    status, _, body = run(["docker", "exec", container, "python", "-c", script], quiet=True).stdout.partition("\n")
    return int(status), body


def requests_answered(container: str, port: int, method: str, path: str, status: int) -> int:
    """Requests this replica answered with `status` on the route `path` (its template, as
    `/v1/cases/<case_id>`), from its own /metrics (read inside the container)."""
    total = 0
    for line in in_container(container, port, "/metrics")[1].splitlines():
        if line.startswith("closeloop_http_requests_total{") and f'method="{method}"' in line \
                and f'path="{path}"' in line and f'status="{status}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def posts_answered(project: Project, container: str) -> int:
    """Complaints this intake replica accepted."""
    return requests_answered(container, 8001, "POST", "/v1/complaints", 201)


def stored_complaints(project: Project) -> int:
    done = project("exec", "-T", "-e", "PGPASSWORD=postgres", "postgres", "psql", "-h", "127.0.0.1",
                   "-U", "postgres", "-d", "closeloop_intake", "-tAc", "SELECT count(*) FROM complaints",
                   quiet=True)
    return int(done.stdout.strip())


class PostLoop(threading.Thread):
    """Posts complaints through the gateway, each with its own Idempotency-Key, until stopped."""

    def __init__(self, project: Project, bearer: str, tills: int = 2):
        super().__init__(daemon=True)
        self.url, self.bearer, self.tills = f"{project.gateway}/v1/complaints", bearer, tills
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def till(self, number: int) -> None:
        sent = 0
        while not self.stopping.is_set():
            sent += 1
            headers = {"Authorization": f"Bearer {self.bearer}", "Content-Type": "application/json",
                       "Idempotency-Key": f"fault-{number}-{uuid.uuid4().hex[:12]}"}
            status, body = http("POST", self.url, COMPLAINT, headers, timeout=35)
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                answer = f"{status}: {str(body)[:200]}"
                if status != 201 and answer not in self.errors and len(self.errors) < 5:
                    self.errors.append(answer)

    def run(self) -> None:
        threads = [threading.Thread(target=self.till, args=(n,), daemon=True) for n in range(self.tills)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def stop(self) -> dict[int, int]:
        self.stopping.set()
        self.join(timeout=60)
        return dict(self.statuses)


def pid_of(container: str) -> int:
    return int(run(["docker", "inspect", "-f", "{{.State.Pid}}", container], quiet=True).stdout)


def crash(container: str) -> None:
    """kill -9 of the container's process, as a crash or the OOM killer does: the restart policy
    brings it back. (`docker kill` counts as stopped by hand, which the policy leaves stopped.)
    With an engine elsewhere (its processes not visible here): `docker kill`, then start it again."""
    pid = pid_of(container)
    try:
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            return
    except PermissionError:
        pass
    say("the engine's processes are not visible here: docker kill, then docker start (not the restart policy)")
    run(["docker", "kill", container], quiet=True)
    run(["docker", "start", container], quiet=True)


def kill_one_while_posting(project: Project, bearer: str, replicas: int) -> tuple[dict, float]:
    """Posts in a loop, kills one intake replica with SIGKILL, waits for the restart policy to
    bring it back healthy, posts a little longer. Returns the statuses counted and the seconds back."""
    victim = project.containers("intake")[0]
    loop = PostLoop(project, bearer)
    loop.start()
    until("the first posts of the loop", lambda: sum(loop.statuses.values()) >= 10, 60, 0.2)
    old_pid = pid_of(victim)
    killed = time.monotonic()
    crash(victim)
    # The policy may restart it before a poll sees it down: wait for another process instead.
    until("the killed intake to be restarted", lambda: pid_of(victim) not in (0, old_pid), 60, 0.2)
    until(f"{replicas} healthy intake replicas after the kill", lambda: replicas_healthy(project, replicas),
          180, 0.5)
    back = time.monotonic() - killed
    before = sum(loop.statuses.values())
    until("posts after the restart", lambda: sum(loop.statuses.values()) >= before + 20, 60, 0.2)
    statuses = loop.stop()
    say(f"{replicas} replica(s), one killed: {statuses} (status: posts; 0 = connection refused/failed); "
        f"back healthy after {back:.1f} s" + (f"; refusals seen: {loop.errors}" if loop.errors else ""))
    return statuses, back


def scale(project: Project, service: str, count: int) -> list[str]:
    project("up", "-d", "--no-deps", "--no-recreate", "--scale", f"{service}={count}", service, quiet=True)
    return until(f"{count} healthy {service} replicas", lambda: replicas_healthy(project, count, service), 180)


def scale_intake(project: Project, count: int) -> list[str]:
    return scale(project, "intake", count)


def bring_up(project: Project) -> None:
    say(f"building the image and starting project {project.name} (gateway on {project.gateway})")
    project("build", quiet=True, timeout=1800)
    project("up", "-d", quiet=True, timeout=600)
    for service in ("intake", "investigation", "aftercare"):
        until(f"{service} to be ready through the gateway", lambda: ready(project, service), 300)
    until("a healthy aftercare relay", lambda: replicas_healthy(project, 1, "aftercare-relay"), 300)


def check(project: Project) -> None:
    bring_up(project)
    first = post_readme_complaint(project)
    say(f"README's first complaint accepted: {first['reference']}")
    again = post_readme_complaint(project)
    if again.get("id") != first["id"]:
        raise Failed(f"the same Idempotency-Key gave another complaint: {first['id']} then {again.get('id')}")
    say("the same request again gave the same complaint")

    replicas = scale_intake(project, 2)
    bearer = token()
    before = {c: posts_answered(project, c) for c in replicas}
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    for n in range(30):
        status, body = http("POST", f"{project.gateway}/v1/complaints", COMPLAINT,
                            dict(headers, **{"Idempotency-Key": f"scaled-{uuid.uuid4().hex[:12]}"}))
        if status != 201:
            raise Failed(f"post {n} through the gateway with 2 replicas answered {status}: {body}")
    served = {c[:12]: posts_answered(project, c) - before[c] for c in replicas}
    say(f"30 posts through the gateway, accepted per intake replica: {served}")
    if sorted(served.values())[0] == 0:
        raise Failed(f"one intake replica answered none of the 30 posts: {served}")

    stored_before = stored_complaints(project)
    statuses, _ = kill_one_while_posting(project, bearer, 2)
    accepted = statuses.get(201, 0)
    if set(statuses) != {201}:
        raise Failed(f"with 2 intake replicas some posts failed while one was killed: {statuses}")
    stored = stored_complaints(project) - stored_before
    if stored != accepted:
        raise Failed(f"{accepted} posts accepted but {stored} complaints stored")
    say(f"with 2 replicas and one killed: all {accepted} posts accepted, each stored once")

    check_investigation(project)
    check_aftercare(project)
    check_reporting(project)
    check_customer_care(project)
    check_console(project)


def check_investigation(project: Project) -> None:
    """A complaint posted through the gateway opens its case (same id) on investigation, which
    the branch's store manager reads through the gateway; then 2 investigation replicas. Another
    branch than the posts above, so that its task list holds this case's task alone."""
    branch = "GZ001"
    front_desk = {"Authorization": f"Bearer {token('front_desk', branch)}", "Content-Type": "application/json",
                  "Idempotency-Key": f"case-{uuid.uuid4().hex[:12]}"}
    status, complaint = http("POST", f"{project.gateway}/v1/complaints", COMPLAINT, front_desk)
    if status != 201:
        raise Failed(f"the complaint for investigation answered {status}: {complaint}")
    posted = time.monotonic()
    manager = {"Authorization": f"Bearer {token('store_manager', branch)}"}
    case_url = f"{project.gateway}/v1/cases/{complaint['id']}"
    seen: list = []

    def case_waits_on_assign():
        status, body = http("GET", case_url, headers=manager, timeout=10)
        seen[:] = [status, body]
        tasks = [t.get("name") for t in body.get("open_tasks", [])] if status == 200 and isinstance(body, dict) else []
        return body if "assign" in tasks else None
    try:
        # Bounded: the kill loop above left intake's events for every complaint it accepted,
        # which investigation works through before this one.
        case = until(f"case {complaint['id']} to open with `assign` waiting", case_waits_on_assign, 180, 0.5)
    except Failed as exc:
        raise Failed(f"{exc}; last answer: {seen}") from None
    if case.get("branch_code") != branch:
        raise Failed(f"the case opened for branch {case.get('branch_code')}, not {branch}")
    say(f"complaint {complaint['reference']} opened case {case['id']} ({case.get('state')}, waiting on "
        f"{[t['name'] for t in case['open_tasks']]}) through the gateway after "
        f"{time.monotonic() - posted:.1f} s")
    status, listed = http("GET", f"{project.gateway}/v1/tasks", headers=manager, timeout=10)
    if status != 200 or not any(t.get("case_id") == case["id"] for t in listed.get("items", [])):
        raise Failed(f"GET /v1/tasks through the gateway does not list the case's task: {status} {str(listed)[:300]}")

    # Its relay too (the health check: a round with broker and database in the last 30 s).
    until("a healthy investigation relay", lambda: replicas_healthy(project, 1, "investigation-relay"), 60)

    replicas = scale(project, "investigation", 2)
    for container in replicas:
        status, body = in_container(container, 8002, "/health/ready")
        if status != 200:
            raise Failed(f"investigation replica {container[:12]} is not ready: {status} {body[:300]}")
    until("investigation to be ready through the gateway", lambda: ready(project, "investigation"), 60)
    route = "/v1/cases/<case_id>"
    before = {c: requests_answered(c, 8002, "GET", route, 200) for c in replicas}
    for n in range(20):
        status, body = http("GET", case_url, headers=manager, timeout=10)
        if status != 200 or body.get("id") != case["id"]:
            raise Failed(f"read {n} of the case through the gateway with 2 investigation replicas: {status} {body}")
    served = {c[:12]: requests_answered(c, 8002, "GET", route, 200) - before[c] for c in replicas}
    say(f"2 investigation replicas healthy and ready; 20 reads of the case through the gateway, "
        f"answered per replica: {served}")
    if sorted(served.values())[0] == 0:
        raise Failed(f"one investigation replica answered none of the 20 reads: {served}")


def last_afternoon(now: datetime) -> datetime:
    """The latest 15:00 in Shanghai at or before `now`: a sale in the past (intake refuses one in
    the future) whose return visit, 2 days later, falls in the contact hours (09:00-21:00) as is."""
    local = now.astimezone(SHANGHAI)
    afternoon = local.replace(hour=15, minute=0, second=0, microsecond=0)
    return afternoon if afternoon <= local else afternoon - timedelta(days=1)


def check_aftercare(project: Project) -> None:
    """A sale of a hair colour, with the customer's consent, posted through the gateway to intake
    plans its return visit on aftercare: an allergy check due 2 days after the sale (15:00 stays
    15:00, inside the contact hours), listed through the gateway for the branch's aftercare agent
    among the scheduled visits. Then aftercare's readiness through the gateway."""
    branch = "SH001"
    sold_at = last_afternoon(datetime.now(timezone.utc))
    sale = {"customer": {"name": "李女士", "phone": "13812346139", "language": "zh", "contact_consent": True},
            "sold_at": sold_at.isoformat(),
            "items": [{"type": "service", "code": "HAIR-DYE", "name": "染发", "product_type": "hair_colour",
                       "technician_id": "T-017"}]}
    front_desk = {"Authorization": f"Bearer {token('front_desk', branch)}", "Content-Type": "application/json",
                  "Idempotency-Key": f"sale-{uuid.uuid4().hex[:12]}"}
    status, recorded = http("POST", f"{project.gateway}/v1/sales", sale, front_desk)
    if status != 201 or not isinstance(recorded, dict) or not recorded.get("id"):
        raise Failed(f"the sale for aftercare answered {status}: {recorded}")
    posted = time.monotonic()
    agent = {"Authorization": f"Bearer {token('aftercare_agent', branch)}"}
    url = f"{project.gateway}/v1/visits?status=scheduled&limit=100"
    seen: list = []

    def visit_listed():
        status, body = http("GET", url, headers=agent, timeout=10)
        seen[:] = [status, str(body)[:500]]
        items = body.get("items", []) if status == 200 and isinstance(body, dict) else []
        return next((v for v in items if v.get("sale_id") == recorded["id"]), None)
    try:
        # Bounded: intake's relay publishes sale_recorded, aftercare plans the visit from it.
        visit = until(f"the return visit of sale {recorded['id']} among the scheduled visits", visit_listed,
                      180, 0.5)
    except Failed as exc:
        raise Failed(f"{exc}; last answer: {seen}") from None
    due = datetime.fromisoformat(str(visit.get("due_at")).replace("Z", "+00:00"))
    expected = sold_at + timedelta(days=2)
    if visit.get("allergy_check") is not True or due != expected or visit.get("branch_code") != branch:
        raise Failed(f"the sale's return visit is not an allergy check for {branch} due at "
                     f"{expected.isoformat()}: {visit}")
    say(f"sale {recorded['id']} (sold {sold_at.isoformat()}) planned visit {visit['id']} (allergy check, due "
        f"{due.astimezone(SHANGHAI).isoformat()}), listed through the gateway after "
        f"{time.monotonic() - posted:.1f} s")
    status, body = http("GET", f"{project.gateway}/health/aftercare", timeout=10)
    if status != 200:
        raise Failed(f"GET /health/aftercare through the gateway answered {status}: {str(body)[:300]}")
    say(f"aftercare ready through the gateway: {body.get('status') if isinstance(body, dict) else body}")


def check_reporting(project: Project) -> None:
    """What the checks above did reaches reporting: HQ's KPIs through the gateway count the
    complaints posted (every one, each once) and the sale's service; an SH001 manager sees only
    SH001's; the dashboard page and its script come through the gateway."""
    hq = {"Authorization": f"Bearer {token('hq_analyst', '*')}"}
    posted = stored_complaints(project)
    seen: list = []

    def counted():
        status, body = http("GET", f"{project.gateway}/v1/kpis", headers=hq, timeout=10)
        seen[:] = [status, str(body)[:500]]
        volume = body.get("totals", {}).get("volume", {}) if status == 200 and isinstance(body, dict) else {}
        return volume if volume.get("total") == posted and volume.get("services", 0) >= 1 else None
    try:
        volume = until(f"reporting to count the {posted} complaints stored", counted, 180, 1)
    except Failed as exc:
        raise Failed(f"{exc}; last answer: {seen}") from None
    say(f"reporting counts {volume['total']} cases ({volume['by_kind']}) and {volume['services']} service(s) sold")
    manager = {"Authorization": f"Bearer {token('store_manager', 'GZ001')}"}
    status, mine = http("GET", f"{project.gateway}/v1/kpis?group_by=branch", headers=manager, timeout=10)
    if status != 200 or [g.get("key") for g in mine.get("groups", [])] != ["GZ001"]:
        raise Failed(f"a GZ001 manager's KPIs by branch through the gateway: {status} {str(mine)[:300]}")
    status, body = http("GET", f"{project.gateway}/health/reporting", timeout=10)
    if status != 200:
        raise Failed(f"GET /health/reporting through the gateway answered {status}: {str(body)[:300]}")
    for path, kind in (("/dashboard", "text/html"), ("/dashboard/assets/dashboard.js", "text/javascript")):
        try:
            with urllib.request.urlopen(f"{project.gateway}{path}", timeout=10) as answer:
                got = answer.headers.get("Content-Type", "")
        except urllib.error.URLError as exc:
            raise Failed(f"GET {path} through the gateway failed: {exc}") from None
        if not got.startswith(kind):
            raise Failed(f"GET {path} through the gateway is {got!r}, not {kind}")
    say("reporting: a branch manager sees its own branch; the dashboard and its script through the gateway")


def check_customer_care(project: Project) -> None:
    """Issue 13 through the gateway's routes: the customer of the aftercare check's sale found by
    phone at intake (`= /v1/customers/lookup`) and their file read from reporting (the rest of
    `/v1/customers`); the standard answers ranked by investigation; their use and the case library
    from reporting."""
    hq = {"Authorization": f"Bearer {token('hq_admin', '*')}", "Content-Type": "application/json"}
    status, found = http("POST", f"{project.gateway}/v1/customers/lookup",
                         {"phone": "13812346139", "purpose": "compose test: the customer file"}, hq)
    if status != 200 or not str(found.get("customer_ref", "")).startswith("c_") or not found.get("sales"):
        raise Failed(f"the phone look-up through the gateway: {status} {str(found)[:300]}")
    seen: list = []

    def filed():
        status, body = http("GET", f"{project.gateway}/v1/customers/{found['customer_ref']}", headers=hq)
        seen[:] = [status, str(body)[:300]]
        return body if status == 200 and isinstance(body, dict) and body.get("sales") else None
    try:
        file = until("the customer's sale in their file", filed, 60, 0.5)
    except Failed as exc:
        raise Failed(f"{exc}; last answer: {seen}") from None
    status, answers = http("GET", f"{project.gateway}/v1/standard-answers?purpose=first_response&language=zh",
                           headers=hq)
    if status != 200 or len(answers.get("answers", [])) < 8:
        raise Failed(f"GET /v1/standard-answers through the gateway: {status} {str(answers)[:300]}")
    status, usage = http("GET", f"{project.gateway}/v1/kpis/standard-answers", headers=hq)
    if status != 200 or "answers" not in usage:
        raise Failed(f"GET /v1/kpis/standard-answers through the gateway: {status} {str(usage)[:300]}")
    request = urllib.request.Request(f"{project.gateway}/v1/exports/case-library.csv", headers=hq)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            kind, head = answer.headers.get("Content-Type", ""), answer.read().decode("utf-8-sig").split("\r\n")[0]
    except urllib.error.URLError as exc:
        raise Failed(f"GET /v1/exports/case-library.csv through the gateway failed: {exc}") from None
    if not kind.startswith("text/csv") or not head.startswith("case_id,category"):
        raise Failed(f"the case library through the gateway is {kind!r}: {head[:200]!r}")
    say(f"customer care: the phone's customer found at intake, their file ({len(file['sales'])} sale) at reporting, "
        f"{len(answers['answers'])} standard answers ranked, their use and the case library through the gateway")


def check_console(project: Project) -> None:
    """The staff console behind the gateway at /: a store manager of GZ001 added with `closeloop
    staff add` (the password on standard input) signs in through the gateway's /login form and
    sees "my work" with the GZ001 case's task from investigation."""
    import http.cookiejar
    import urllib.parse

    password = f"compose-{uuid.uuid4().hex[:12]}"
    added = subprocess.run([*project.compose, *project.files, "-p", project.name, "run", "--rm", "-T", "migrate",
                            "closeloop", "staff", "add", "gina", "--name", "GZ manager", "--role", "store_manager",
                            "--branch", "GZ001"], cwd=ROOT, env=project.env, input=password + "\n",
                           capture_output=True, text=True, timeout=180)
    if added.returncode != 0:
        raise Failed(f"closeloop staff add failed ({added.returncode}): {added.stdout[-500:]}{added.stderr[-1000:]}")
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def page(path: str, form: dict | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with browser.open(urllib.request.Request(f"{project.gateway}{path}", data=data), timeout=15) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    status, form = page("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    if status != 200 or not csrf:
        raise Failed(f"GET /login through the gateway answered {status} without a form: {form[:300]}")
    status, work = page("/login", {"login": "gina", "password": password, "csrf_token": csrf.group(1)})
    if status != 200 or "GZ001" not in work or "我的工作" not in work:
        raise Failed(f"signing in through the gateway ended on {status}: {work[:500]}")
    say("console: a store manager added with `closeloop staff add` signs in through the gateway and sees my work")


def fault(project: Project) -> None:
    bring_up(project)
    bearer = token()
    kill_one_while_posting(project, bearer, 1)
    scale_intake(project, 2)
    kill_one_while_posting(project, bearer, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", action="store_true", help="measure refusals while intake is killed")
    parser.add_argument("--project", default="closeloop-compose-test", help="compose project name")
    parser.add_argument("--keep", action="store_true", help="leave the project running (debugging)")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        project = Project(args.project)
    except Failed as exc:
        print(f"compose-test: FAILED: {exc}", file=sys.stderr)
        return 2
    try:
        (fault if args.fault else check)(project)
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"compose-test: FAILED: {exc}", file=sys.stderr, flush=True)
        project.show_state()
        return 1
    finally:
        if not args.keep:
            project.down()
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
