"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file is
valid, every closeloop command in it parses, each runnable service has a scalable server and
relay that start after the one-off jobs, and the image installs what it copies."""
import fnmatch
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
