"""Free text as every service stores it (shared/web/text.py): invisible format characters
removed, bidirectional controls refused, nothing left is "required"."""
import pytest
from marshmallow import Schema, ValidationError

from shared.web.text import REQUIRED, CleanText, TextRefused, clean_text


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
