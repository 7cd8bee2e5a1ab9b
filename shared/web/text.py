"""Free text as stored: invisible format characters removed, bidirectional controls refused.

A description made only of zero-width spaces looks filled in but says nothing, and a name
starting with U+202E (right-to-left override) shows staff, and a customer's SMS, a
different text from the one stored. Every service's schemas take their free text through
`CleanText` (or `clean_text`), so the rule is the same everywhere.
"""
from __future__ import annotations

import functools
import re
import unicodedata

from marshmallow import ValidationError, fields

# Embeddings, overrides and isolates reorder what follows them: refused, the sender must fix it.
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
ZWJ = "\u200d"
REQUIRED = "required (nothing visible is left once invisible characters are removed)"


class TextRefused(ValueError):
    """The text holds a character that is refused rather than removed."""


def _emoji_side(char: str) -> bool:
    # Emoji are symbols (So); U+FE0F and skin tones sit between them and a joiner.
    return unicodedata.category(char) in ("So", "Sk", "Mn") or "\U0001f3fb" <= char <= "\U0001f3ff"


_BIDI = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")


@functools.cache
def _format_characters() -> re.Pattern:
    """Every Cf character but the joiner, as one class: a C-speed scan even of a 1 MB body
    (built once, on the first text that is not ASCII)."""
    chars = (chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf")
    return re.compile("[" + "".join(re.escape(c) for c in chars if c != ZWJ) + "]+")


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
    text = _format_characters().sub("", text)
    if ZWJ in text:
        text = re.sub(ZWJ, _joiner, text)
    return text.strip()


class CleanText(fields.String):
    """A string field cleaned by `clean_text`; empty once cleaned is "required". With
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
            raise ValidationError(REQUIRED)
        return cleaned
