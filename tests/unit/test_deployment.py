"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file is
valid, every closeloop command in it parses, each runnable service has a scalable server and
relay that start after the one-off jobs, and the image installs what it copies."""
import fnmatch
import json
import glob
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from shared.runtime import config
from shared.cli import parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
RESTARTING = {"always", "unless-stopped", "on-failure"}


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def closeloop_argvs(command) -> list[list[str]]:
    """The closeloop invocations in a command or health-check test (list or string form,
    `sh -c "a && b"`, CMD / CMD-SHELL)."""
    argv = shlex.split(command) if isinstance(command, str) else list(command or [])
    if argv[:1] in (["CMD"], ["CMD-SHELL"]):
        argv = argv[1:] if argv[0] == "CMD" else shlex.split(argv[1])
    if argv[:2] in (["sh", "-c"], ["bash", "-c"]):
        return [p for part in argv[2].split("&&") for p in closeloop_argvs(part.strip())]
    return [argv] if argv[:1] == ["closeloop"] else []


def runs(service: dict) -> list[list[str]]:
    return closeloop_argvs(service.get("command"))


def test_compose_file_is_valid():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: run `bash scripts/install-system-packages.sh`")
    done = subprocess.run([exe, "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_closeloop_command_parses():
    argvs = [argv for svc in services().values()
             for argv in runs(svc) + closeloop_argvs(svc.get("healthcheck", {}).get("test"))]
    # The token command the file's own comment tells people to run.
    argvs += [shlex.split(c) for c in re.findall(r"`docker compose run --rm \S+ (closeloop [^`]+)`",
                                                 COMPOSE.read_text())]
    assert len(argvs) >= 6
    for argv in argvs:
        try:
            parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"`{shlex.join(argv)}` in docker-compose.yml does not parse")


def test_runnable_services_have_scalable_server_and_relay_after_the_one_off_jobs():
    svcs = services()
    for job, argv, infra in (("migrate", ["closeloop", "db", "upgrade"], "postgres"),
                             ("bus-declare", ["closeloop", "bus", "declare"], "rabbitmq")):
        assert svcs[job].get("restart") == "no", job
        assert argv in runs(svcs[job]), job
        assert svcs[job]["depends_on"][infra] == {"condition": "service_healthy"}, job
    assert ["closeloop", "keys", "ensure"] in runs(svcs["migrate"])
    for infra in ("rabbitmq", "postgres"):
        assert svcs[infra].get("healthcheck", {}).get("test"), infra
    for name in config.RUNNABLE_SERVICES:
        for verb in ("serve", "relay"):
            found = [s for s in svcs.values() if ["closeloop", verb, name] in runs(s)]
            assert len(found) == 1, f"no compose service runs `closeloop {verb} {name}`"
            svc = found[0]
            assert svc.get("healthcheck", {}).get("test"), (verb, name)
            assert svc.get("restart") in RESTARTING, (verb, name)
            for job in ("migrate", "bus-declare"):
                assert svc["depends_on"][job] == {"condition": "service_completed_successfully"}, (verb, name, job)
            # Scalable: no fixed name, and no single fixed host port (a range, or none).
            assert "container_name" not in svc, (verb, name)
            for port in svc.get("ports", []):
                host = str(port.get("published", "")) if isinstance(port, dict) else \
                    (str(port).rsplit(":", 1)[0] if ":" in str(port) else "")
                assert host == "" or "-" in host.rsplit(":", 1)[-1], f"{name}: host port {port} blocks --scale"
            keys = svc["environment"]["CLOSELOOP_KEYS_DIR"]
            assert f"./.keys:{keys}:ro" in svc["volumes"], (verb, name)  # services only read the keys
            assert svc["environment"].get("CLOSELOOP_DEV_KEYS") == "1", (verb, name)


def test_each_runnable_service_and_its_relay_use_the_broker_user_bus_declare_makes_for_it():
    svcs = services()
    job = svcs["bus-declare"]
    [users] = [argv for argv in runs(job) if argv[1:3] == ["bus", "users"]]
    named = [users[i + 1] for i, word in enumerate(users) if word == "--service"]
    for name in config.RUNNABLE_SERVICES:
        assert name in named, f"bus-declare makes no broker user for {name}"
        password = job["environment"].get(f"CLOSELOOP_BUS_PASSWORD_{name.upper()}")
        assert password, f"bus-declare has no CLOSELOOP_BUS_PASSWORD_{name.upper()}"
        for verb in ("serve", "relay"):
            [svc] = [s for s in svcs.values() if ["closeloop", verb, name] in runs(s)]
            assert svc["environment"]["AMQP_URI"] == f"amqp://closeloop-{name}:{password}@rabbitmq:5672//", \
                (verb, name)

def test_dockerfile_copies_existing_paths_and_installs_the_project():
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()]
    copied = set()
    for words in lines:
        if words[0].upper() in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
            for src in [w for w in words[1:] if not w.startswith("--")][:-1]:
                assert glob.glob(str(ROOT / src)), f"Dockerfile copies {src}, which is not in the repository"
                assert not any(fnmatch.fnmatch(src, p) for p in ignored), f"{src} is in .dockerignore"
                copied.add(src.rstrip("/"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*.") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml"} | packages <= copied
    assert "closeloop" in project["project"]["scripts"]
    installs = [w for w in lines if w[0].upper() == "RUN" and re.search(r"pip install (-e )?\.(\s|$)", " ".join(w))]
    assert installs, "the Dockerfile never runs `pip install .` (or -e .): no closeloop command in the image"


# --- the gateway: one front door routing DESIGN.md's paths ------------------------------------

GATEWAY_CONF = ROOT / "gateway" / "closeloop.conf"
# DESIGN.md's HTTP section, path by path, with the service (and port) that answers it (and the
# staff notices investigation serves the console).
ROUTES = {"/v1/complaints": "intake:8001", "/v1/sales": "intake:8001",
          "/v1/cases": "investigation:8002", "/v1/tasks": "investigation:8002",
          "/v1/archive": "investigation:8002", "/v1/standard-answers": "investigation:8002",
          "/v1/notifications": "investigation:8002", "/v1/visits": "aftercare:8003",
          "/v1/kpis": "reporting:8004", "/v1/alerts": "reporting:8004", "/v1/exports": "reporting:8004",
          "/v1/access-log": "reporting:8004", "/v1/customers": "reporting:8004",
          "/v1/customers/lookup": "intake:8001",  # `= exact`: the rest of /v1/customers is reporting's
          "/dashboard": "reporting:8004", "/": "console:8005"}


def gateway_locations() -> dict[str, str]:
    """Each location of the gateway's config (prefix, `= exact` or `@named`) with its block."""
    text = re.sub(r"#.*$", "", GATEWAY_CONF.read_text(), flags=re.M)
    found = {}
    for match in re.finditer(r"\blocation\s+(?:=\s*)?(\S+)\s*\{", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        found[match.group(1)] = text[match.end():end - 1]
    return found


def test_gateway_routes_every_path_of_the_design_to_its_service():
    locations = gateway_locations()
    for path, upstream in ROUTES.items():
        assert path in locations, f"the gateway has no location for {path}"
        body = locations[path]
        assert f"set $closeloop_service {upstream};" in body and "proxy_pass http://$closeloop_service;" in body, \
            f"{path} is not routed to {upstream}"
        if "error_page" in body:  # a location's error_page replaces the server's JSON pages
            assert re.search(r"error_page [\d ]*\b502\b[\d ]* /_closeloop_error;", body), path
    for name, port in config.HTTP_PORTS.items():
        assert any(f"{name}:{port}" in body for body in locations.values()), f"{name} is never routed to"


def test_gateway_finds_replicas_and_answers_its_own_errors_in_json():
    text = re.sub(r"^\s*#.*$", "", GATEWAY_CONF.read_text(), flags=re.M)
    # A variable in proxy_pass: names are resolved per request through Docker's DNS, so scaled
    # replicas are found (a literal name is resolved once, at start).
    assert re.search(r"^resolver 127\.0\.0\.11 valid=\d+s", text, re.M)
    assert not re.search(r"proxy_pass\s+http://[a-z]", text), "a literal upstream name is resolved only at start"
    # A POST that reached a service is resent only with an Idempotency-Key, and only to intake,
    # whose POSTs honour it.
    keyed = gateway_locations()["@intake_keyed_post"]
    assert "non_idempotent" in keyed and "intake:8001" in keyed
    assert text.count("non_idempotent") == 1
    assert re.search(r'map "\$request_method:\$http_idempotency_key" \$closeloop_keyed_post \{\s*"~\^POST:\."\s+1;', text)
    for path in ("/v1/complaints", "/v1/sales"):
        body = gateway_locations()[path]
        assert "error_page 418 = @intake_keyed_post;" in body and "recursive_error_pages on;" in body, path
        # A location's error_page replaces the server's list: the JSON pages must be repeated.
        assert re.search(r"error_page [\d ]*\b502\b[\d ]* /_closeloop_error;", body), path
    assert re.search(r"error_page [\d ]*\b502\b[\d ]* /_closeloop_error;", text)
    error_block = gateway_locations()["/_closeloop_error"]
    body = re.search(r"return 200 '(.*)';", error_block).group(1)
    shape = json.loads(body.replace("$closeloop_error_code", "x").replace("$closeloop_error_message", "y"))
    assert shape == {"error": {"code": "x", "message": "y", "fields": {}}}
    # Every message is safe inside that JSON string.
    for message in re.findall(r'^\s+(?:\d+|default)\s+"([^"]*)";', text, re.M):
        assert '"' not in message and "\\" not in message, message


def test_gateway_routes_investigation_and_aftercare_without_resending_their_posts():
    locations = gateway_locations()
    for path in ("/v1/cases", "/v1/tasks", "/v1/archive", "/v1/standard-answers", "/v1/visits"):
        body = locations[path]
        # Their POSTs (tasks, attempts) take no Idempotency-Key: never redirected to a keyed-post
        # location, never resent once they reached a replica; the server's JSON error pages apply.
        for word in ("non_idempotent", "error_page", "proxy_next_upstream", "@intake_keyed_post"):
            assert word not in body, (path, word)
    for service, port in (("investigation", 8002), ("aftercare", 8003)):
        health = locations[f"/health/{service}"]
        assert f"set $closeloop_service {service}:{port};" in health
        assert "proxy_pass http://$closeloop_service/health/ready;" in health

def test_gateway_body_limit_is_the_services_default():
    size = re.search(r"client_max_body_size (\d+)([km]?);", GATEWAY_CONF.read_text())
    limit = int(size.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2)]
    assert limit == config.service_config("intake", {})["MAX_BODY_BYTES"]


def test_gateway_is_the_one_published_http_port_and_mounts_its_config():
    svcs = services()
    gateway = svcs["gateway"]
    assert gateway["image"].startswith("nginx:")
    assert "./gateway/closeloop.conf:/etc/nginx/conf.d/default.conf:ro" in gateway["volumes"]
    assert gateway.get("restart") in RESTARTING
    assert [p for p in gateway["ports"] if p.startswith("127.0.0.1:") and p.endswith(":8080")], gateway["ports"]
    assert "listen 8080;" in GATEWAY_CONF.read_text()
    for name in config.RUNNABLE_SERVICES:
        for svc in svcs.values():
            if ["closeloop", "serve", name] in runs(svc):
                assert not svc.get("ports"), f"{name} publishes a host port: callers go through the gateway"


def test_readme_first_complaint_goes_through_the_gateway():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme.split("## Your first complaint", 1)[1], re.S).group(1)
    assert "curl -s -X POST http://127.0.0.1:8080/v1/complaints" in block
