"""Customers' contact data: validation, masking, and the keyed reference used on the bus."""
from __future__ import annotations

import hashlib
import hmac
import re

_SEPARATORS = re.compile(r"[\s\-()]")
_MOBILE_CN = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
_LANDLINE_CN = re.compile(r"^0\d{2,3}\d{7,8}$")
_INTERNATIONAL = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_phone(raw: str) -> str | None:
    """The phone in one canonical form, or None when it is not a phone number."""
    if not isinstance(raw, str):
        return None
    compact = _SEPARATORS.sub("", raw.strip())
    mobile = _MOBILE_CN.match(compact)
    if mobile:
        return mobile.group(1)
    if _LANDLINE_CN.match(compact) or _INTERNATIONAL.match(compact):
        return compact
    return None


def is_email(raw: str) -> bool:
    return isinstance(raw, str) and len(raw) <= 254 and bool(_EMAIL.match(raw))


def mask_phone(phone: str | None) -> str | None:
    """A Chinese mobile as the design shows it (138****6138); any other number with at least
    half its digits hidden (+1****67), so a short one cannot be guessed from its mask."""
    if not phone:
        return None
    if _MOBILE_CN.match(phone) and len(phone) == 11:
        return phone[:3] + "****" + phone[-4:]
    plus, digits = ("+", phone[1:]) if phone.startswith("+") else ("", phone)
    if len(digits) <= 6:  # too short to show more than its first digit
        return plus + digits[:1] + "*" * (len(digits) - 1)
    shown = min(7, len(digits) // 2)  # at most 3 leading and 4 trailing, as for a mobile
    head = min(3, shown // 2)
    return plus + digits[:head] + "*" * (len(digits) - shown) + digits[len(digits) - (shown - head):]


def mask_name(name: str | None) -> str | None:
    if not name:
        return None
    return name[:1] + "**"


def mask_email(email: str | None) -> str | None:
    if not email:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_contact(contact: str) -> str:
    return mask_email(contact) if "@" in contact else (mask_phone(contact) or "")


def customer_ref(key: bytes, phone: str | None, email: str | None = None) -> str | None:
    """A keyed hash of the contact: the same customer matches across events, and the
    phone cannot be recovered from the bus without the key."""
    contact = phone or (email.strip().lower() if email else None)
    if not contact:
        return None
    return "c_" + hmac.new(key, contact.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def redact(text: str, *, name: str | None = None, phone: str | None = None, email: str | None = None) -> str:
    """The text with this customer's name, phone and email masked wherever they appear, however
    the phone is written (+86 138 1234 6138, 138-1234-6138): what logs and staff may see of a
    message written to the customer."""
    if email and email.strip():
        text = re.sub(re.escape(email.strip()), mask_email(email.strip()), text, flags=re.IGNORECASE)
    if phone and phone.strip():
        digits = re.sub(r"\D", "", phone)
        if len(digits) >= 5:
            loose = r"(?:\+?\s*86[\s\-]*|\+)?" + r"[\s\-().]*".join(map(re.escape, digits))
            text = re.sub(r"(?<!\d)" + loose + r"(?!\d)", mask_phone(phone), text)
    if name and name.strip():
        text = _redact_name(text, name.strip())
    return text


_NAME_SEPARATORS = re.compile(r"[\s·・.]+")


def _redact_name(text: str, name: str) -> str:
    """The whole name however it is spaced or cased, then each part of two letters or more
    on its own ("Dear Ms Smith" for Anne Smith)."""
    parts = [p for p in _NAME_SEPARATORS.split(name) if p]
    if not parts:
        return text
    whole = r"[\s·・.]*".join(map(re.escape, parts))
    text = re.sub(whole, lambda _: mask_name(name), text, flags=re.IGNORECASE)
    if len(parts) > 1:
        for part in sorted({p for p in parts if len(p) >= 2}, key=len, reverse=True):
            text = re.sub(re.escape(part), lambda _, p=part: mask_name(p), text, flags=re.IGNORECASE)
    return text
