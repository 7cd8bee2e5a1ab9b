"""What reporting keeps of a case's free text (the description, the findings, the measures, the
corrective action): the text with contact data and names taken out, before it is stored. Pure.

Out go (each replaced by shared.security.privacy.ANONYMISED):
- phone numbers however written: mobiles (13812346138, 138 1234 6138, 138-1234-6138, +86 ...),
  masked ones (138****6138), landlines (021-12345678, (0755) 1234 5678), numbers with a country code;
- e-mail addresses; WeChat and QQ ids after their label (微信号: wang_fang88, WeChat ID fang-88, QQ 12345678);
- the customer's surname (from the masked name intake published: 王** -> 王) followed by an honorific,
  with or without a given name between (王女士, 王芳女士, 王姐, 王阿姨, 王先生), and any masked name (王**);
- an English title and the name after it (Mr Smith, Ms. Anne Lee, Mrs Wang, Miss Li).
The label stays (微信号: [已匿名]): the reader knows what was there.

Scrubbing twice changes nothing, and scrubbing without the surname then with it gives what
scrubbing with it gives (no rule eats what the surname's rule finds): the fold may learn the
customer's mask after the text (events in any order) and scrub the text again."""
from __future__ import annotations

import re

from shared.security.privacy import ANONYMISED, anonymise_text, surname_from_mask

HONORIFICS = ("女士", "先生", "小姐", "太太", "阿姨", "老师", "姐", "哥")
# A messaging id after its label: WeChat ids start with a letter (6-20 letters, digits, - and _).
# After a bare label (no colon, no 号/ID) only an id with a digit, - or _ in it ("via WeChat today" stays).
_MESSAGING_ID = re.compile(
    r"(?P<label>(?:微信|(?<![A-Za-z])(?:wechat|weixin|vx|wx))(?P<named>\s*(?:号|id))?\s*(?P<colon>[:：])?\s*)"
    r"(?P<id>[A-Za-z][A-Za-z0-9_\-]{5,19})(?![A-Za-z0-9_\-])"
    r"|(?P<qq>(?<![A-Za-z])qq(?:\s*号)?\s*[:：]?\s*)\d{5,12}(?!\d)", re.IGNORECASE)
# A title and the name after it (a capital M: "we miss you", "200 ms later" stay).
_TITLED = re.compile(r"(?<![A-Za-z])(?:M(?i:rs|r|s|x)|Miss)\.?\s+[A-Za-z][A-Za-z'\-]*(?:\s+[A-Z][A-Za-z'\-]*)?")
_CJK = "\u3400-\u9fff"


def _messaging(match: re.Match) -> str:
    if match.group("qq") is not None:
        return match.group("qq") + ANONYMISED
    if match.group("named") or match.group("colon") or re.search(r"[\d_\-]", match.group("id")):
        return match.group("label") + ANONYMISED
    return match.group(0)


def scrub_text(text: str | None, masked_name: str | None = None) -> str | None:
    """`text` without contact data or the customer's name (see the module's doc); `masked_name`:
    the customer's name as intake masked it (王**), when known."""
    if not text:
        return text
    surname = surname_from_mask(masked_name)
    text = anonymise_text(text, surname=surname)
    text = _MESSAGING_ID.sub(_messaging, text)
    text = _TITLED.sub(ANONYMISED, text)
    if surname:
        honorific = "|".join(sorted(HONORIFICS, key=len, reverse=True))
        text = re.sub(rf"{re.escape(surname)}[{_CJK}]{{0,2}}?(?:{honorific})", ANONYMISED, text)
    return text
