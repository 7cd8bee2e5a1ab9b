"""Notification adapters for tests: one that records in memory and can hold sends back,
and one for a real `closeloop relay` process (CLOSELOOP_NOTIFIER=
shared.testing.notifiers:FileNotifier) that writes each send to a file."""
from __future__ import annotations

import os
import threading
import time


def _record(message) -> dict:
    return {"id": message.id, "audience": message.audience, "channel": message.channel,
            "recipient": message.recipient, "language": message.language, "body": message.body,
            "log_text": message.log_text, "subject_id": message.subject_id, "attempts": message.attempts}


class RecordingNotifier:
    """Keeps every message it is given, body included (tests only). hold() makes sends wait
    until release(); `behaviour(message)`, when given, runs in each send and may raise (a
    failing gateway) or block (a gateway that never answers)."""

    def __init__(self, behaviour=None):
        self.behaviour = behaviour
        self.started: list[dict] = []  # every call, as it begins
        self.sent: list[dict] = []     # the calls that returned
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def send(self, message) -> None:
        record = _record(message)
        self.started.append(record)
        self._open.wait()
        if self.behaviour is not None:
            self.behaviour(message)
        self.sent.append(record)


class FileNotifier:
    """Appends `<row id> <subject id>` to the file CLOSELOOP_TEST_NOTIFY_FILE as each send
    begins, then takes CLOSELOOP_TEST_NOTIFY_SECONDS to answer, so a test can kill the
    process while sends are in flight."""

    def __init__(self):
        self.path = os.environ["CLOSELOOP_TEST_NOTIFY_FILE"]
        self.seconds = float(os.environ.get("CLOSELOOP_TEST_NOTIFY_SECONDS", "0"))

    def send(self, message) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(f"{message.id} {message.subject_id}\n")
        time.sleep(self.seconds)  # green in the relay process (monkey-patched)
