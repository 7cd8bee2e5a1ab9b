"""What reporting keeps of a case's free text (the description, the findings, the measures, the
corrective action): the text with contact data and names taken out, before it is stored, and
again as the case library reads it (with the newest rules and the customer's mask). Pure.

Out go (each replaced by shared.security.privacy.ANONYMISED):
- phone numbers however written: mobiles (13812346138, 138 1234 6138, 138-1234-6138, (138) 1234 6138,
  +86 / 0086 ..., in full-width digits １３８..., in Chinese numerals 一三八...), masked ones (138****6138),
  landlines with their area code (021-12345678, (0755) 1234 5678), numbers with a country code;
- any run of 15 digits or more (an ID card's 18, its last maybe X, or 15; a bank card's 16-19);
- e-mail addresses, also written ＠, "at"/"[at]" and "dot"/"[dot]" (wang at example dot com);
- WeChat and QQ ids after their label (微信号: wang_fang88, 微信 wangfang, v信 ..., WeChat ID fang-88,
  QQ 12345678, 扣扣 ...);
- the customer's surname (from the masked name intake published: 王** -> 王) followed by an honorific,
  with or without a given name between (王女士, 王芳女士, 王姐, 王阿姨, 王先生), the surname and a given
  name after a word for the customer (顾客王芳, 客户：王小芳), and any masked name (王**);
- an English title and the name after it (Mr Smith, Ms. Anne Lee, Mrs.Wang, Miss Li, Dr Wang).
Invisible format characters (zero-width spaces and joiners, bidirectional controls) go first: they
would split a number for the patterns and not for the eye; a text that had a right-to-left control
is also read backwards for numbers (one written backwards shows forwards). The label stays
(微信号: [已匿名]): the reader knows what was there.

Not caught (the README says so): a name without an honorific or a word for the customer before it
(王芳说), a name in Latin script without a title, a phone number split by words or commas (138，
1234，6138), a local number without its area code (1234 5678), a street address, a messaging id
without its label. The case library is training material that staff read, not a publication.

Scrubbing twice changes nothing, and scrubbing without the surname then with it gives what
scrubbing with it gives (no rule eats what the surname's rules find): the fold may learn the
customer's mask after the text (events in any order) and scrub the text again."""
from __future__ import annotations

import re
import unicodedata

from shared.security.privacy import ANONYMISED, anonymise_text, surname_from_mask

HONORIFICS = ("女士", "先生", "小姐", "太太", "阿姨", "老师", "姐", "哥")
# Words for the customer a name may follow (顾客王芳说).
CUSTOMER_WORDS = ("顾客", "客户", "客人", "会员", "消费者", "投诉人", "来电人", "当事人", "患者")
# After a surname and one character of a given name, what ends the name rather than continues it.
_NOT_A_NAME = "说的了在于因称反投表要等和与对向是也都已又再就被把给打到去来买做染烫剪今昨前后当认觉希"
_CJK = "\u3400-\u9fff"
# Format characters that do not show: zero-width spaces and joiners, soft hyphen, bidi controls.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_RIGHT_TO_LEFT = re.compile("[\u202b\u202e\u2067]")  # what shows the text after it right to left
# Digits of any script (１３８, ١٣٨), Chinese numerals (一三八, 幺 as said on the phone), full-width signs,
# read as ASCII: one character for one, so a match in the read text is the same span of the original.
_NUMERALS = dict(zip("〇零一二三四五六七八九幺", "001234567891"))
_SIGNS = {"＋": "+", "－": "-", "（": "(", "）": ")", "\u3000": " ", "．": ".", "。": ".", "＠": "@", "／": "/"}


class _Reading(dict):
    """The reading table for str.translate: the numerals, signs and full-width letters above, and
    the digits of every script (mathematical ones, 𝟏𝟑𝟖, too) looked up as they are first met and
    kept (every character of U+0080-U+1FFFF tested at import took 90 ms of each process's start)."""

    def __missing__(self, code: int):
        char = chr(code)
        found = (str(unicodedata.decimal(char)) if 0x80 <= code < 0x20000 and unicodedata.category(char) == "Nd"
                 else code)  # any other character: itself
        self[code] = found
        return found


def _reading_table() -> dict[int, str]:
    table = _Reading({ord(k): v for k, v in {**_NUMERALS, **_SIGNS}.items()})
    table.update({0xFF21 + i: chr(0x41 + i) for i in range(26)} | {0xFF41 + i: chr(0x61 + i) for i in range(26)})
    return table


_READ = _reading_table()
# Between two digits of one number: a space or two, a bracket, a dash or a dot (with a space): not "..",
# which runs two dates together (2026-10-01..2026-10-03).
_SEP = r"(?:[\s()]{1,2}|[\-.]\s?|\s[\-.(])?"
# A bracket that opens a number's first group, (138) or (0755), not one around the whole number.
_OPEN = r"(?:\((?=[\d\s+]{1,6}\)))?"
_NUMBERS = re.compile(
    r"(?<![A-Za-z0-9_*])(?:"
    # a mobile, maybe with +86 / 0086 / 86 first
    rf"{_OPEN}(?:(?:\+|00)\s*86\)?{_SEP}|86[\s\-]+)?1{_SEP}[3-9](?:{_SEP}\d){{9}}"
    # a landline with its area code (010, 02x, 0xxx) and a local number of 7-8 digits, not starting 0 or 1
    rf"|(?<![\-.]){_OPEN}0{_SEP}(?:1{_SEP}0|2{_SEP}\d|[3-9](?:{_SEP}\d){{2}}){_SEP}[2-9](?:{_SEP}\d){{6,7}}"
    # an ID card (18 digits, the last maybe X, or 15) or a bank card (16-19): any run of 15 digits or more
    r"|\d(?:[\s\-]?\d){13,}(?:[\s\-]?[\dXx])"
    r")(?![0-9*])")
_MASKED_PHONE = re.compile(r"(?<![A-Za-z0-9_*])1[3-9]\d[\s\-]*[*＊xX]{3,5}[\s\-]*\d{4}(?![0-9*])")
_TLD = r"(?:com|cn|net|org|edu|gov|hk|tw|mo|io|me|co|info|biz|top|vip|xyz)"
_EMAILS = re.compile(
    # ＠ and 。 read as @ and . (the text as _READ reads it), a space either side of the @
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+\s?@\s?[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"
    # the address spelled out: wang at example dot com, wang [at] example [dot] com
    r"|(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+\s*(?:\s(?i:at)\s|[\[(（{](?i:at|@)[\])）}]|艾特)\s*"
    rf"[A-Za-z0-9\-]+(?:\s*(?:\s(?i:dot)\s|[\[(（{{](?i:dot|\.)[\])）}}]|\.|点)\s*[A-Za-z0-9\-]+)*"
    rf"\s*(?:\s(?i:dot)\s|[\[(（{{](?i:dot|\.)[\])）}}]|\.|点)\s*(?i:{_TLD})(?![A-Za-z0-9])")
# A messaging id after its label: WeChat ids start with a letter (6-20 letters, digits, - and _).
# After a Chinese label (微信 wangfang) any such id; after a bare English one (no colon, no 号/ID) only an
# id with a digit, - or _ in it ("via WeChat today" stays). After a label and a colon, whatever the
# first word is (微信：王芳).
_MESSAGING_ID = re.compile(
    r"(?P<label>(?:(?P<zh>微信|薇信|威信|维信|[vV]信|加[vV])|(?<![A-Za-z])(?:wechat|weixin|vx|wx))"
    r"(?P<named>\s*(?:号|id))?\s*(?P<colon>[:：])?\s*)"
    r"(?:(?P<id>[A-Za-z][A-Za-z0-9_\-]{5,19})(?![A-Za-z0-9_\-])|(?(colon)(?P<word>[^\W_][\w\-]{0,19})|(?!)))"
    r"|(?P<qq>(?:(?<![A-Za-z])qq|扣扣|企鹅|(?<![A-Za-z])Q号)(?:\s*号)?\s*[:：]?\s*)\d{5,12}(?!\d)", re.IGNORECASE)
# A title and the name after it (a capital M: "we miss you", "200 ms later" stay; a capital name after
# Dr and Prof: "a Dr. appointment" stays).
_TITLED = re.compile(r"(?<![A-Za-z])(?:(?:M(?i:rs|r|s|x)|Miss)(?:\.\s*|\s+)[A-Za-z]|(?:Dr|Prof)(?:\.\s*|\s+)[A-Z])"
                     r"[A-Za-z'\-]*(?:\s+[A-Z][A-Za-z'\-]*)?")


def _messaging(match: re.Match) -> str:
    if match.group("qq") is not None:
        return match.group("qq") + ANONYMISED
    if match.group("word") is not None:
        return match.group("label") + ANONYMISED
    if (match.group("zh") or match.group("named") or match.group("colon")
            or re.search(r"[\d_\-]", match.group("id"))):
        return match.group("label") + ANONYMISED
    return match.group(0)


def _sub_read(pattern: re.Pattern, text: str, put: str = ANONYMISED) -> str:
    """`pattern`'s matches in `text` as _READ reads it, replaced by `put` in the original."""
    spans = [m.span() for m in pattern.finditer(text.translate(_READ))]
    for start, end in reversed(spans):
        text = text[:start] + put + text[end:]
    return text


def scrub_text(text: str | None, masked_name: str | None = None) -> str | None:
    """`text` without contact data or the customer's name (see the module's doc); `masked_name`:
    the customer's name as intake masked it (王**), when known."""
    if not text:
        return text
    surname = surname_from_mask(masked_name)
    backwards = _RIGHT_TO_LEFT.search(text) is not None
    text = _INVISIBLE.sub("", text)
    text = _sub_read(_NUMBERS, text)  # before the shared rules, which would take a piece of a long run
    if backwards:  # a number written backwards to show forwards (\u202e8316 4321 831)
        text = _sub_read(_NUMBERS, text[::-1], ANONYMISED[::-1])[::-1]
    text = anonymise_text(text, surname=surname)
    text = _sub_read(_MASKED_PHONE, text)
    text = _sub_read(_EMAILS, text)
    text = _MESSAGING_ID.sub(_messaging, text)
    text = _TITLED.sub(ANONYMISED, text)
    if surname:
        honorific = "|".join(sorted(HONORIFICS, key=len, reverse=True))
        text = re.sub(rf"{re.escape(surname)}[{_CJK}]{{0,2}}?(?:{honorific})", ANONYMISED, text)
        words = "|".join(CUSTOMER_WORDS)
        text = re.sub(rf"(?P<word>(?:{words})\s*[:：]?\s*){re.escape(surname)}[{_CJK}](?:(?![{_NOT_A_NAME}])[{_CJK}])?",
                      lambda m: m.group("word") + ANONYMISED, text)
    return text
