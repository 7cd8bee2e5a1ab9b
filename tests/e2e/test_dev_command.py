"""`make dev` runs intake and its relay as local processes, and stopping make stops them all."""
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from shared.runtime.config import with_database
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


def test_make_dev_serves_intake_and_sigterm_to_make_stops_every_process(infra, amqp_uri, token):
    port = free_port()
    prefix = f"cltest_{RUN_ID}_dev"
    drop_at_exit(with_database(infra.database_url, f"{prefix}_intake"))
    env = {**os.environ, "AMQP_URI": amqp_uri, "DATABASE_URL": infra.database_url,
           "CLOSELOOP_DB_PREFIX": prefix, "INTAKE_PORT": str(port)}
    make = subprocess.Popen(["make", "--no-print-directory", "dev"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def healthy():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(healthy, "intake from make dev to answer", timeout=60, interval=0.2)
        created = requests.post(f"http://127.0.0.1:{port}/v1/complaints", timeout=10,
                                headers={"Authorization": f"Bearer {token('front_desk', branch='GZ001')}"},
                                json={"kind": "praise", "channel": "wechat", "description": "发型师很专业",
                                      "customer": {"name": "陈先生", "phone": "13900001111"}})
        assert created.status_code == 201, created.text
        started = descendants(make.pid)
        assert len(started) >= 3  # the supervisor, intake and its relay

        make.send_signal(signal.SIGTERM)
        make.wait(timeout=30)
        wait_until(lambda: not any(alive(pid) for pid in started), "every process make dev started to stop",
                   timeout=30)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if make.poll() is None:
            make.kill()
