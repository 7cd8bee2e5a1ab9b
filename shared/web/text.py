"""Free text as stored: invisible format characters removed, bidirectional controls refused.

A description made only of zero-width spaces looks filled in but says nothing, and a name
starting with U+202E (right-to-left override) shows staff, and a customer's SMS, a
different text from the one stored. Every service's schemas take their free text through
`CleanText` (or `clean_text`), so the rule is the same everywhere.
"""
from __future__ import annotations

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


def clean_text(text: str) -> str:
    """The text without format characters (Unicode category Cf: zero-width space, soft
    hyphen, BOM, tags...) and surrounding whitespace. A zero-width joiner between two emoji
    stays (👩‍🔧 is one picture). TextRefused for a bidirectional control."""
    if text.isascii():  # the common case: nothing to look at
        return text.strip()
    kept = []
    last = len(text) - 1
    for i, char in enumerate(text):
        if char in BIDI_CONTROLS:
            raise TextRefused(f"must not contain the bidirectional control U+{ord(char):04X}")
        if unicodedata.category(char) != "Cf":
            kept.append(char)
        elif char == ZWJ and 0 < i < last and kept and _emoji_side(kept[-1]) and _emoji_side(text[i + 1]):
            kept.append(char)
    return "".join(kept).strip()


class CleanText(fields.String):
    """A string field cleaned by `clean_text`; empty once cleaned is "required"."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            cleaned = clean_text(super()._deserialize(value, attr, data, **kwargs))
        except TextRefused as exc:
            raise ValidationError(str(exc)) from None
        if not cleaned:
            raise ValidationError(REQUIRED)
        return cleaned
