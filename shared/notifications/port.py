"""The notification port: SMS, WeChat and email to customers.

Adapters implement `send`; the relay calls it for each queued notification, so a
message is never lost with a failing gateway. The default adapter only logs.
"""
from __future__ import annotations

import logging
from typing import Protocol

from shared.security.privacy import mask_contact

CHANNELS = ("sms", "wechat", "email")
log = logging.getLogger("closeloop.notify")


class Notifier(Protocol):
    def send(self, channel: str, recipient: str, language: str, body: str, subject_id: str) -> None: ...


class LogNotifier:
    """Writes each notification to the log (recipient masked) instead of sending it."""

    def __init__(self):
        self.sent: list[dict] = []

    def send(self, channel, recipient, language, body, subject_id):
        if channel not in CHANNELS:
            raise ValueError(f"unknown notification channel {channel!r}")
        record = {"channel": channel, "recipient": mask_contact(recipient), "language": language,
                  "body": body, "subject_id": subject_id}
        self.sent.append(record)
        del self.sent[:-1000]  # keep memory bounded in long runs
        log.info("notification sent", extra={"notification": record})


ADAPTERS = {"log": LogNotifier}


def make_notifier(name: str = "log") -> Notifier:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise ValueError(f"unknown notifier {name!r}; available: {', '.join(ADAPTERS)}") from None
