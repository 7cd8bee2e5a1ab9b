"""Standard answers (标准应答语, seed 003): the chain's prepared replies, ranked by how often their
category is complained about, so that the answers to the most frequent complaints come first, and
filled with a case's facts for the handler to edit before sending. Plain Python: the answers
are policy data (policy.StandardAnswer), the counts the repository's."""
from __future__ import annotations

from datetime import timedelta
from typing import Iterable

from services.investigation.policy import StandardAnswer

WINDOW = timedelta(days=90)  # complaints counted over the last 90 days
# {customer} for a case without a masked name (an anonymous complaint, an anonymised case).
ANONYMOUS = {"zh": "顾客", "en": "customer"}


def selected(answers: Iterable[StandardAnswer], *, category: str | None = None, purpose: str | None = None,
             language: str | None = None) -> list[StandardAnswer]:
    """The answers of the given category, purpose and language (None: any)."""
    return [a for a in answers if (category is None or a.category == category)
            and (purpose is None or a.purpose == purpose) and (language is None or a.language == language)]


def ranked(answers: Iterable[StandardAnswer], complaints: dict[str, int],
           categories: tuple[str, ...]) -> list[tuple[StandardAnswer, int]]:
    """Each answer with its category's complaints, most first; ties by the category's place in
    the policy (intake's order), then by id."""
    place = {code: i for i, code in enumerate(categories)}
    counted = [(answer, complaints.get(answer.category, 0)) for answer in answers]
    return sorted(counted, key=lambda pair: (-pair[1], place.get(pair[0].category, len(place)), pair[0].id))


def filled(answer: StandardAnswer, facts: dict) -> str:
    """The answer's text with the case's facts (Case.answer_facts) put in its placeholders (the
    policy check let only known ones through)."""
    return answer.text.format(**{**facts, "customer": facts.get("customer") or ANONYMOUS[answer.language]})
