"""Pages from Jinja2 templates (autoescaped), in Chinese (the default) or English.

Translations: the msgids are English, in the templates and code; `translations/zh/LC_MESSAGES/
console.po` holds the Chinese. The .po is compiled in memory when the console starts (Babel), so
a clean checkout works after `make install` with no build step and no binary file to keep in step.
tests/unit/test_console_pages.py checks that every msgid the templates and code use is translated."""
from __future__ import annotations

import functools
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from services.console.policy import DEFAULT_LANGUAGE, LANGUAGES

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
CATALOGS = HERE / "translations"
DOMAIN = "console"


def N_(message: str) -> str:
    """Marks a msgid for the catalog; translated where it is shown."""
    return message


ROLE_LABELS = {"front_desk": N_("Front desk"), "store_manager": N_("Store manager"),
               "aftercare_agent": N_("Aftercare agent"), "investigator": N_("Quality investigator"),
               "regional_manager": N_("Regional manager"), "hq_analyst": N_("HQ analyst"),
               "hq_admin": N_("HQ admin"), "auditor": N_("Auditor")}
PRIORITY_LABELS = {"urgent": N_("Urgent"), "general": N_("General"), "low": N_("Low")}
ALL_BRANCHES = N_("All branches")
# The user tasks of investigation's processes, by the titles it gives them.
TASK_TITLES = frozenset((N_("Assign an owner"), N_("First response to the customer"), N_("Record findings"),
                         N_("Propose a remedy"), N_("Approve the remedy"), N_("Fulfil the remedy"),
                         N_("Written result to the customer"), N_("Open a corrective action"),
                         N_("Chase the action"), N_("Record the promise broken"), N_("Acknowledge"),
                         N_("Adopt or decline"), N_("Pass the praise on"), N_("Answer the inquiry")))


@functools.lru_cache(maxsize=None)
def translations(language: str) -> NullTranslations:
    """The catalog of `language`, compiled from its .po (English is the msgids themselves)."""
    po = CATALOGS / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == "en" or not po.exists():
        return NullTranslations()
    with po.open("rb") as given:
        catalog = read_po(given, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def gettext(language: str, message: str) -> str:
    return translations(language).gettext(message)


@functools.lru_cache(maxsize=None)
def environment(language: str) -> jinja2.Environment:
    """One environment a language: the templates are compiled once per language."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(translations(language), newstyle=True)
    text = translations(language).gettext
    env.globals.update(language=language, languages=LANGUAGES,
                       role_label=lambda role: text(ROLE_LABELS.get(role, role)),
                       priority_label=lambda priority: text(PRIORITY_LABELS.get(priority, priority)),
                       scope_label=lambda staff: text(ALL_BRANCHES) if staff.scope_kind == "all" else staff.scope_value,
                       # only the titles the catalog knows are looked up: a title is data, and
                       # gettext's answer would be trusted as markup
                       task_title=lambda title: text(title) if title in TASK_TITLES else title)
    env.filters["when"] = lambda instant, zone=None: format_instant(instant, zone, language)
    return env


def render(template: str, language: str, **context) -> str:
    if language not in LANGUAGES:
        language = DEFAULT_LANGUAGE
    return environment(language).get_template(template).render(**context)


# -- numbers from a service's answer ----------------------------------------------------------------

def number(value, default=0):
    """A number a service's JSON holds, or `default` when it holds something else (a text, a list,
    NaN): a service answering an odd shape makes an odd figure, not a failed page."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return value


def integer(value, default: int = 0) -> int:
    found = number(value, None)
    return default if found is None else int(found)


def objects(value) -> list[dict]:
    """The objects of a list a service's JSON holds (anything else in it, or no list, left out)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# -- dates and times, in the branch's zone ---------------------------------------------------------

def parse_instant(text) -> datetime | None:
    """An instant from a service's JSON (ISO 8601, `Z` allowed), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)


def format_instant(instant, zone: str | ZoneInfo | None, language: str) -> str:
    """zh `2026年11月23日 14:05`, en `2026-11-23 14:05` (ISO-like), in `zone` (a branch's)."""
    if isinstance(instant, str):
        instant = parse_instant(instant)
    if not isinstance(instant, datetime):  # None, or a service's odd shape (a number, a list)
        return ""
    local = instant.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone or timezone.utc)
    if language == "zh":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local:%Y-%m-%d %H:%M}"


def format_remaining(seconds: float, language: str) -> str:
    """What the countdown shows before its script takes over (the same words as console.js)."""
    late = seconds < 0
    minutes = int(abs(seconds) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if language == "zh":
        text = (f"{days}天" if days else "") + (f"{hours}小时" if days or hours else "") + f"{minutes}分"
        return f"已超时 {text}" if late else f"剩余 {text}"
    text = (f"{days}d " if days else "") + (f"{hours}h " if days or hours else "") + f"{minutes}m"
    return f"overdue {text}" if late else f"{text} left"
