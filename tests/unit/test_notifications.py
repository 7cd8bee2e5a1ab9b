"""The notification queue's messages, the port's adapters and the sender's rules that
need no database."""
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.notifications import queue
from shared.notifications.port import LogNotifier, make_notifier
from shared.notifications.sender import NotificationSender, backoff
from shared.runtime.config import service_config
from shared.testing.notifiers import RecordingNotifier

ROOT = Path(__file__).resolve().parents[2]


def test_back_off_doubles_from_two_seconds_up_to_an_hour_with_jitter():
    for attempts, nominal in [(1, 2), (2, 4), (3, 8), (10, 1024), (12, 3600), (16, 3600), (500, 3600)]:
        delays = [backoff(attempts) for _ in range(50)]
        assert all(nominal * 0.9 <= d <= nominal * 1.1 for d in delays)
        assert len(set(delays)) > 1


def test_staff_messages_address_a_role_in_one_scope():
    by_branch = queue.StaffMessage(role="store_manager", subject_id="c", text="t", branch="SH001")
    by_region = queue.StaffMessage(role="regional_manager", subject_id="c", text="t", region="east")
    everywhere = queue.StaffMessage(role="hq_admin", subject_id="c", text="t")
    assert [m.address for m in (by_branch, by_region, everywhere)] == [
        "role:store_manager;branch:SH001", "role:regional_manager;region:east", "role:hq_admin"]
    assert queue.parse_staff_address(by_region.address) == {"role": "regional_manager", "branch": None,
                                                             "region": "east"}
    row = queue.message_row(by_branch)
    assert (row["audience"], row["channel"], row["recipient"], row["log_text"]) == \
        ("staff", "staff", "role:store_manager;branch:SH001", "t")
    with pytest.raises(ValueError, match="unknown role"):
        queue.StaffMessage(role="manager", subject_id="c", text="t")
    with pytest.raises(ValueError, match="not both"):
        queue.StaffMessage(role="hq_admin", subject_id="c", text="t", branch="SH001", region="east")


def test_customer_messages_become_rows_and_refuse_unknown_channels():
    m = queue.CustomerMessage(channel="sms", recipient="13812346138", language="zh", body="王女士，您好", subject_id="c")
    assert queue.message_row(m) == {"audience": "customer", "channel": "sms", "recipient": "13812346138",
                                    "language": "zh", "body": "王女士，您好", "subject_id": "c",
                                    "log_text": None, "request_event_id": None}
    with pytest.raises(ValueError, match="unknown customer channel"):
        queue.CustomerMessage(channel="fax", recipient="1", language="zh", body="b", subject_id="c")
    with pytest.raises(TypeError):
        queue.message_row({"channel": "sms"})


def test_the_log_adapter_withholds_a_text_without_a_masked_version(caplog):
    row = SimpleNamespace(audience="customer", channel="wechat", recipient="13812346138", language="zh",
                          body="王女士，您好", log_text=None, subject_id="c")
    with caplog.at_level(logging.INFO, logger="closeloop.notify"):
        LogNotifier().send(row)
    [record] = caplog.records
    assert record.notification["recipient"] == "138****6138"
    assert record.notification["text"] == "[text withheld, 6 chars]"


def test_adapters_are_named_log_or_by_dotted_path_and_a_wrong_name_says_what_is_wrong():
    assert isinstance(make_notifier("log"), LogNotifier)
    assert isinstance(make_notifier("shared.testing.notifiers:RecordingNotifier"), RecordingNotifier)
    for name, says in [("sms", "use 'log'"), ("no_such_module:Gateway", "cannot import"),
                       ("shared.testing.notifiers:Missing", "has no 'Missing'"),
                       ("shared.testing.notifiers:", "use 'log'")]:
        with pytest.raises(ValueError, match=says):
            make_notifier(name)


def test_the_lease_must_outlast_the_send_timeout():
    with pytest.raises(ValueError, match="lease"):
        NotificationSender(None, LogNotifier(), timeout_s=10, lease_s=10)


def test_the_sender_settings_come_from_the_environment():
    config = service_config("intake", env={"CLOSELOOP_NOTIFIER": "acme.sms:Gateway",
                                           "CLOSELOOP_NOTIFY_TIMEOUT_SECONDS": "3",
                                           "CLOSELOOP_NOTIFY_LEASE_SECONDS": "30"})
    assert (config["NOTIFIER"], config["NOTIFY_TIMEOUT_SECONDS"], config["NOTIFY_LEASE_SECONDS"]) == \
        ("acme.sms:Gateway", 3.0, 30.0)
    defaults = service_config("intake", env={})
    assert (defaults["NOTIFIER"], defaults["NOTIFY_TIMEOUT_SECONDS"], defaults["NOTIFY_LEASE_SECONDS"]) == \
        ("log", 10.0, 60.0)


def test_the_relay_refuses_to_start_with_an_unknown_notifier():
    env = {**os.environ, "CLOSELOOP_NOTIFIER": "smsgateway"}
    done = subprocess.run([sys.executable, "-m", "shared.cli", "relay", "intake"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "relay for intake cannot start: unknown notifier 'smsgateway'" in done.stderr
