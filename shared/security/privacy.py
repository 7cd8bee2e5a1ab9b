"""Customers' contact data: validation, masking, and the keyed reference used on the bus."""
from __future__ import annotations

import hashlib
import hmac
import re
from typing import Callable

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
        loose = _loose_phone(phone)
        if loose is not None:
            text = loose.sub(mask_phone(phone), text)
    if name and name.strip():
        text = _redact_name(text, name.strip())
    return text


def _loose_phone(phone: str) -> re.Pattern | None:
    """This number however it is written (+86 138 1234 6138, 138-1234-6138)."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 5:
        return None
    loose = r"(?:(?:\+|00)?\s*86[\s\-]*|\+|00)?" + r"[\s\-().]*".join(map(re.escape, digits))
    return re.compile(r"(?<!\d)" + loose + r"(?!\d)")


_NAME_SEPARATORS = re.compile(r"[\s·・.]+")


def _name_parts(name: str) -> list[str]:
    return [p for p in _NAME_SEPARATORS.split(name) if p]


def _whole_name(parts: list[str]) -> re.Pattern:
    return re.compile(r"[\s·・.]*".join(map(re.escape, parts)), re.IGNORECASE)


def _redact_name(text: str, name: str) -> str:
    """The whole name however it is spaced or cased, then each part of two letters or more
    on its own ("Dear Ms Smith" for Anne Smith)."""
    parts = _name_parts(name)
    if not parts:
        return text
    text = _whole_name(parts).sub(lambda _: mask_name(name), text)
    if len(parts) > 1:
        for part in sorted({p for p in parts if len(p) >= 2}, key=len, reverse=True):
            text = re.sub(re.escape(part), lambda _, p=part: mask_name(p), text, flags=re.IGNORECASE)
    return text


# -- anonymisation: what retention leaves of a text once its record's personal data is due ----

ANONYMISED = "[已匿名]"  # what stands where a name, a number or an address was
HONORIFICS_ZH = ("女士", "先生", "小姐", "老师", "太太")  # after a surname: 王女士
# Two-character surnames, so that 欧阳女士 is found whole (the common ones).
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
                     "夏侯", "令狐", "端木", "南宫", "西门", "独孤")
_ANY_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+*\-])[A-Za-z0-9._%+*\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_ANY_PHONE = re.compile(
    r"(?<![\d*])(?:"
    r"(?:\+?86[\s\-.]*)?1[3-9]\d(?:[\s\-.]?\d){8}"  # a Chinese mobile: 13812346138, +86 138-1234-6138, 138.1234.6138
    r"|1[3-9]\d\*{4}\d{4}"                           # one as masked: 138****6138
    # a landline: 021-12345678, (0755) 1234 5678; not the tail of a reference (SH001-20261122-0007)
    r"|(?<![A-Za-z\-])\(?0[1-9]\d{1,2}\)?[\s\-]*\d{3,4}[\s\-]?\d{4}"
    r"|(?:\+|(?<![A-Za-z\-])00)[1-9](?:[\s\-]?\d){6,14}"  # any number with its country code
    r")(?![\d*])")
_MASKED_NAME = re.compile(r"(?<![\w*])[^\W\d_]\*{2,}")  # a name as masked: 王**, A**


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\U00020000" <= char <= "\U0002ffff"


def surname_of(name: str | None) -> str | None:
    """The surname of a name in Chinese (王芳, 欧阳娜娜, 王女士): its compound surname or
    first character; None for a name in another script (which part is the surname is unknown)."""
    core = (name or "").strip()
    for honorific in HONORIFICS_ZH:
        if core.endswith(honorific) and len(core) > len(honorific):
            core = core[:-len(honorific)]
            break
    if not core or not _is_cjk(core[0]):
        return None
    compound = next((s for s in COMPOUND_SURNAMES if core.startswith(s)), None)
    return compound or core[0]


def surname_from_mask(masked: str | None) -> str | None:
    """What a masked name (王**) keeps of a name in Chinese: its first character, the surname
    (a Latin initial is no surname)."""
    return masked[0] if masked and _is_cjk(masked[0]) else None


# Full-width digits and signs (１３８, ＋８６, as Chinese input methods type them) read as ASCII ones:
# one character for one, so a match in the translated text is the same span of the original.
_AS_ASCII = str.maketrans({chr(0xFF10 + d): str(d) for d in range(10)} | {"＋": "+", "－": "-", "（": "(", "）": ")",
                                                                          "\u3000": " ", "．": "."})


def _sub_as_ascii(pattern: re.Pattern, text: str) -> str:
    """`pattern`'s matches in `text` read with ASCII digits, replaced by ANONYMISED in the original."""
    spans = [m.span() for m in pattern.finditer(text.translate(_AS_ASCII))]
    for start, end in reversed(spans):
        text = text[:start] + ANONYMISED + text[end:]
    return text


def anonymise_text(text: str, *, name: str | None = None, surname: str | None = None, phone: str | None = None,
                   email: str | None = None) -> str:
    """The text with personal data replaced by ANONYMISED: this customer's `name` (whole, however
    spaced or cased; in Latin script each part of two letters or more too: Ms Smith), a Chinese
    `surname` (or the name's) with an honorific (王女士, 王老师) or masked (王**), this `phone` and `email`
    however written, and any phone number, e-mail address or masked name at all. Names not
    given cannot be found: a service knowing only a mask finds only the surname's forms."""
    if not text:
        return text
    if email and email.strip():
        text = re.sub(re.escape(email.strip()), ANONYMISED, text, flags=re.IGNORECASE)
    text = _ANY_EMAIL.sub(ANONYMISED, text)
    loose = _loose_phone(phone) if phone and phone.strip() else None
    for pattern in ([loose] if loose is not None else []) + [_ANY_PHONE]:
        text = _sub_as_ascii(pattern, text)
    parts = _name_parts(name.strip()) if name else []
    surnames = {s for s in (surname, surname_of(name)) if s}
    if parts and len("".join(parts)) >= 2:  # one character alone (王) is in too many words
        # A Chinese name is one part however it is spaced (王 芳).
        chinese = len(parts) == 1 and all(_is_cjk(c) for c in parts[0])
        whole = _whole_name(list(parts[0]) if chinese else parts).pattern
        honorific = "(?:" + "|".join(HONORIFICS_ZH) + ")?" if chinese else ""  # 王芳女士 goes whole
        text = re.sub(whole + honorific, ANONYMISED, text, flags=re.IGNORECASE)
    latin = [p for p in parts if len(p) >= 2 and not _is_cjk(p[0])]
    for part in sorted(latin, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z]){re.escape(part)}(?![A-Za-z])", ANONYMISED, text, flags=re.IGNORECASE)
    for found in sorted(surnames, key=len, reverse=True):
        text = re.sub(re.escape(found) + "(?:" + "|".join(HONORIFICS_ZH) + r"|\*{2,})", ANONYMISED, text)
    return _MASKED_NAME.sub(ANONYMISED, text)


# -- a record's texts, for the retention runs -------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def scrubber(customer_masked: dict | None) -> Callable[[str], str]:
    """What anonymises one record's texts (a case's, a visit's): numbers, addresses and masks
    anywhere, and the surname its mask kept, with an honorific."""
    surname = surname_from_mask((customer_masked or {}).get("name"))
    return lambda text: anonymise_text(text, surname=surname)


def scrub_json(value, scrub: Callable[[str], str]):
    """Every text inside a JSON value scrubbed; keys, numbers and ids (UUIDs, which a phone
    pattern could take a run of digits of) kept."""
    if isinstance(value, str):
        return value if _UUID.fullmatch(value) else scrub(value)
    if isinstance(value, list):
        return [scrub_json(item, scrub) for item in value]
    if isinstance(value, dict):
        return {key: scrub_json(item, scrub) for key, item in value.items()}
    return value
