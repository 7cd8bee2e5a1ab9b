"""The notification port: SMS, WeChat and email to customers, and messages to staff.

The sender (sender.py) calls an adapter's `send(message)` for each queued row, with a
timeout, outside any transaction; a failing gateway costs a retry, never a message. The
adapter is named by CLOSELOOP_NOTIFIER: `log` (the default, only logs) or
`package.module:ClassName`, made with no arguments, so a chain plugs in its own gateway.
"""
from __future__ import annotations

import importlib
import logging
from typing import Protocol

from shared.notifications.queue import CUSTOMER_CHANNELS, STAFF_CHANNEL
from shared.security.privacy import mask_contact

CHANNELS = CUSTOMER_CHANNELS
log = logging.getLogger("closeloop.notify")


class Message(Protocol):
    """What `send` gets: a claimed notifications row (or any object with these attributes)."""
    channel: str      # sms, wechat, email; or staff
    recipient: str    # a customer's contact in clear, or a staff address (role:...;branch:...)
    language: str
    body: str         # the text to deliver: never log it
    log_text: str | None
    subject_id: str
    audience: str     # customer or staff


class Notifier(Protocol):
    # True for an adapter that blocks outside eventlet (a C client library, an unpatched
    # socket): the sender then runs it in a real thread, so its timeout still applies. An
    # adapter built on requests or plain sockets is cooperative and leaves it False.
    blocking: bool = False

    def send(self, message: Message) -> None:
        """Deliver one message, or raise. Raise Undeliverable when trying again cannot help."""


class Undeliverable(Exception):
    """Raised by an adapter when retrying is pointless (no such number, unsubscribed):
    the sender gives the message up at once instead of trying again for hours."""


def loggable(message: Message) -> dict:
    """What logs may show of a message: a customer's contact masked, and the masked text
    the queuing service gave (never the body, which may greet the customer by name)."""
    staff = message.audience == "staff"
    text = message.log_text if message.log_text is not None else f"[text withheld, {len(message.body)} chars]"
    return {"channel": message.channel, "audience": message.audience, "language": message.language,
            "recipient": message.recipient if staff else mask_contact(message.recipient),
            "subject_id": message.subject_id, "text": text}


class LogNotifier:
    """Writes each message to the log, masked, instead of sending it."""

    def __init__(self):
        self.sent: list[dict] = []  # what was logged, for a look in tests and the shell

    def send(self, message: Message) -> None:
        allowed = (STAFF_CHANNEL,) if message.audience == "staff" else CHANNELS
        if message.channel not in allowed:
            raise Undeliverable(f"unknown {message.audience} channel {message.channel!r}")
        record = loggable(message)
        self.sent.append(record)
        del self.sent[:-1000]  # keep memory bounded in long runs
        log.info("notification sent", extra={"notification": record})


ADAPTERS = {"log": LogNotifier}


def make_notifier(name: str = "log") -> Notifier:
    """The adapter CLOSELOOP_NOTIFIER names; a ValueError saying what is wrong otherwise."""
    if name in ADAPTERS:
        return ADAPTERS[name]()
    module_name, colon, class_name = name.partition(":")
    if not colon or not module_name or not class_name:
        raise ValueError(f"unknown notifier {name!r}: use {' or '.join(map(repr, ADAPTERS))}, "
                         "or 'package.module:ClassName' for a gateway adapter")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"notifier {name!r}: cannot import {module_name!r} ({exc})") from None
    adapter_class = getattr(module, class_name, None)
    if adapter_class is None:
        raise ValueError(f"notifier {name!r}: {module_name!r} has no {class_name!r}")
    adapter = adapter_class()
    if not callable(getattr(adapter, "send", None)):
        raise ValueError(f"notifier {name!r}: {class_name} has no send(message) method")
    return adapter
