"""`make dev` runs every runnable service (intake, investigation, aftercare, reporting) and each
one's relay, and the console, as local processes: a complaint posted to intake opens its case on
investigation, the console answers, and stopping make stops them all."""
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from shared.runtime.config import DATABASE_SERVICES, RUNNABLE_SERVICES, with_database
from shared.testing.fixtures import RUN_ID, drop_at_exit, free_port, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        children.setdefault(int(fields["PPid"].strip()), []).append(int(fields["Pid"].strip()))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:\t")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_make_dev_serves_every_service_and_sigterm_to_make_stops_every_process(infra, amqp_uri, token):
    ports = {service: free_port() for service in DATABASE_SERVICES}  # the console's too
    prefix = f"cltest_{RUN_ID}_dev"
    for service in DATABASE_SERVICES:
        drop_at_exit(with_database(infra.database_url, f"{prefix}_{service}"))
    env = {**os.environ, "AMQP_URI": amqp_uri, "DATABASE_URL": infra.database_url,
           "CLOSELOOP_DB_PREFIX": prefix, **{f"{s.upper()}_PORT": str(p) for s, p in ports.items()}}
    intake = f"http://127.0.0.1:{ports['intake']}"
    investigation = f"http://127.0.0.1:{ports['investigation']}"
    make = subprocess.Popen(["make", "--no-print-directory", "dev"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def healthy(port):
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        for service, port in ports.items():
            wait_until(lambda: healthy(port), f"{service} from make dev to answer", timeout=60, interval=0.2)
        created = requests.post(f"{intake}/v1/complaints", timeout=10,
                                headers={"Authorization": f"Bearer {token('front_desk', branch='GZ001')}"},
                                json={"kind": "complaint", "channel": "front_desk", "description": "烫发后头发干枯",
                                      "customer": {"name": "陈先生", "phone": "13900001111"}})
        assert created.status_code == 201, created.text
        complaint = created.json()

        # intake's relay publishes complaint_registered; investigation opens the case under the
        # complaint's id.
        manager = {"Authorization": f"Bearer {token('store_manager', branch='GZ001')}"}

        def case():
            answer = requests.get(f"{investigation}/v1/cases/{complaint['id']}", headers=manager, timeout=5)
            return answer.status_code == 200 and answer.json()
        opened = wait_until(case, "the complaint's case to open on investigation", timeout=20, interval=0.2)
        assert opened["branch_code"] == "GZ001"
        assert "assign" in [t["name"] for t in opened["open_tasks"]]
        started = descendants(make.pid)
        # the supervisor, each service and its relay, the console
        assert len(started) >= 1 + 2 * len(RUNNABLE_SERVICES) + 1

        make.send_signal(signal.SIGTERM)
        make.wait(timeout=30)
        wait_until(lambda: not any(alive(pid) for pid in started), "every process make dev started to stop",
                   timeout=30)
        for port in ports.values():
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if make.poll() is None:
            make.kill()
