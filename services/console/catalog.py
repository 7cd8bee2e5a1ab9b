"""The console's messages: every msgid its templates and code use (Babel's extractors), and the
ones the Chinese catalog lacks. `python -m services.console.catalog` lists what to translate in
translations/zh/LC_MESSAGES/console.po (tests/unit/test_console_pages.py fails while any is missing)."""
from __future__ import annotations

import sys

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from services.console.rendering import CATALOGS, DOMAIN, HERE

KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
METHODS = [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}}


def used_msgids() -> dict[str, list[str]]:
    """msgid -> where it is used (file:line)."""
    found: dict[str, list[str]] = {}
    for filename, line, message, _comments, _context in extract_from_dir(
            str(HERE), METHODS, keywords=KEYWORDS, options_map=OPTIONS):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, []).append(f"{filename}:{line}")
    return found


def untranslated(language: str = "zh") -> dict[str, list[str]]:
    with (CATALOGS / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as given:
        catalog = read_po(given, locale=language)
    translated = {m.id for m in catalog if m.id and m.string}
    return {msgid: where for msgid, where in used_msgids().items() if msgid not in translated}


if __name__ == "__main__":
    missing = untranslated()
    for msgid, where in sorted(missing.items()):
        print(f"msgid {msgid!r}  ({', '.join(where)})")
    sys.exit(1 if missing else 0)
