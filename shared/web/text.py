"""Free text as stored: invisible format characters removed, bidirectional controls refused.

A description made only of zero-width spaces looks filled in but says nothing, and a name
starting with U+202E (right-to-left override) shows staff, and a customer's SMS, a
different text from the one stored. Every service's schemas take their free text through
`CleanText` (or `clean_text`), so the rule is the same everywhere.
"""
from __future__ import annotations

import re
import unicodedata

from marshmallow import ValidationError, fields

# Embeddings, overrides and isolates reorder what follows them: refused, the sender must fix it.
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
ZWJ = "\u200d"
REQUIRED = "required (nothing visible is left once invisible characters are removed)"
# An optional field sent empty: "required" would mislead a till that sends "" for "none".
EMPTY = "empty (nothing visible once invisible characters are removed): leave it out, or send null, when there is none"


class TextRefused(ValueError):
    """The text holds a character that is refused rather than removed."""


def _emoji_side(char: str) -> bool:
    # Emoji are symbols (So); U+FE0F and skin tones sit between them and a joiner.
    return unicodedata.category(char) in ("So", "Sk", "Mn") or "\U0001f3fb" <= char <= "\U0001f3ff"


_BIDI = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")


# Unicode category Cf (Unicode 14.0, Python 3.11's tables) as literal ranges: scanning all code
# points for them costs a quarter of a second, which would stall every greenthread on first use.
# tests/unit/test_text.py checks them against the running Python's tables.
FORMAT_RANGES = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)


def _char_class(ranges, leave_out: str) -> re.Pattern:
    """Every character of the ranges but `leave_out`, as one class: a C-speed scan even of a 1 MB body."""
    parts = []
    for low, high in ranges:
        gap = ord(leave_out)
        pieces = [(low, gap - 1), (gap + 1, high)] if low <= gap <= high else [(low, high)]
        parts += [f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in pieces if a <= b]
    return re.compile("[" + "".join(parts) + "]+")


_FORMAT = _char_class(FORMAT_RANGES, leave_out=ZWJ)


def _joiner(match: re.Match) -> str:
    text, at = match.string, match.start()
    inside = 0 < at < len(text) - 1 and _emoji_side(text[at - 1]) and _emoji_side(text[at + 1])
    return ZWJ if inside else ""


def clean_text(text: str) -> str:
    """The text without format characters (Unicode category Cf: zero-width space, soft
    hyphen, BOM, tags...) and surrounding whitespace. A zero-width joiner between two emoji
    stays (👩‍🔧 is one picture). TextRefused for a bidirectional control."""
    if text.isascii():  # the common case: nothing to look at
        return text.strip()
    bidi = _BIDI.search(text)
    if bidi:
        raise TextRefused(f"must not contain the bidirectional control U+{ord(bidi.group()):04X}")
    text = _FORMAT.sub("", text)
    if ZWJ in text:
        text = re.sub(ZWJ, _joiner, text)
    return text.strip()


class CleanText(fields.String):
    """A string field cleaned by `clean_text`; empty once cleaned is "required" (or "empty",
    when the field is optional). With
    `max_length`, a text far longer is refused before it is scanned (a 1 MB body costs no more
    than a short one)."""

    def __init__(self, *args, max_length: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_length = max_length

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.max_length is not None and len(text) > 2 * self.max_length + 100:
            raise ValidationError(f"longer than {self.max_length} characters")
        try:
            cleaned = clean_text(text)
        except TextRefused as exc:
            raise ValidationError(str(exc)) from None
        if not cleaned:
            raise ValidationError(REQUIRED if self.required else EMPTY)
        return cleaned
