"""Free text as every service stores it (shared/web/text.py): invisible format characters
removed, bidirectional controls refused, nothing left is "required"."""
import unicodedata

import pytest
from marshmallow import Schema, ValidationError

from shared.web.text import FORMAT_RANGES, REQUIRED, ZWJ, CleanText, TextRefused, clean_text


@pytest.mark.parametrize("raw, cleaned", [
    ("  染发后头皮过敏  ", "染发后头皮过敏"),
    ("王\u200b女\u200c士\ufeff", "王女士"),           # zero-width space, non-joiner, BOM
    ("re\u00adcolour", "recolour"),                    # soft hyphen
    ("\u200e王女士\u200f", "王女士"),                   # LRM/RLM marks: stripped, not refused
    ("👩\u200d🔧 great", "👩\u200d🔧 great"),           # ZWJ inside an emoji sequence stays
    ("a\u200db", "ab"),                                # elsewhere it goes
    ("\u200b\u200b\u200b", ""),
    ("plain ascii", "plain ascii"),
])
def test_format_characters_are_stripped(raw, cleaned):
    assert clean_text(raw) == cleaned


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067",
                                     "\u2068", "\u2069"])
def test_bidirectional_controls_are_refused(control):
    with pytest.raises(TextRefused, match=f"U\\+{ord(control):04X}"):
        clean_text(f"{control}王女士")


def test_the_format_ranges_are_the_running_pythons_category_cf():
    # The ranges are literal so that no request pays for a scan of every code point; a Python
    # with newer Unicode tables fails here until they are updated.
    listed = {code for low, high in FORMAT_RANGES for code in range(low, high + 1)}
    cf = {code for code in range(0x110000) if unicodedata.category(chr(code)) == "Cf"}
    assert listed == cf
    stripped = "".join(map(chr, sorted(cf - {ord(ZWJ)} - {ord(c) for c in "\u202a\u202b\u202c\u202d\u202e"
                                                           "\u2066\u2067\u2068\u2069"})))
    assert clean_text(f"x{stripped}y") == "xy"


class Note(Schema):
    text = CleanText(required=True)


def test_the_field_names_the_problem():
    assert Note().load({"text": "\u200bhello\u200b"}) == {"text": "hello"}
    with pytest.raises(ValidationError) as raised:
        Note().load({"text": "\u200b \u2060"})
    assert raised.value.messages == {"text": [REQUIRED]}
    with pytest.raises(ValidationError) as raised:
        Note().load({"text": "\u202egnp.exe"})
    assert "bidirectional control U+202E" in raised.value.messages["text"][0]
