"""The simulated chain: the policy's first N branches, the people working in them, what they sell,
and each day's traffic at the tills and front desks (complaints of every category, suggestions,
praise, sales), drawn from a seeded random generator, so that one seed plays the same chain."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from demo import texts
from demo.api import DemoError, Person
from shared.calendar.branches import Branch
from shared.calendar.clock import isoformat

CHANNELS = (("front_desk", 40), ("phone", 15), ("wechat", 15), ("online_chat", 8), ("web_form", 7),
            ("social_media", 8), ("email", 7))
AT_THE_DESK = ("front_desk", "phone")  # posted by the front desk; the others by the branch's CRM
# Categories that come more often, for a plausible mix once each has come once.
WEIGHTS = {"service_quality": 5, "staff_attitude": 3, "booking": 3, "hygiene_environment": 2, "price": 2,
           "product_quality": 2, "after_sales": 2, "safety": 1}


@dataclass(frozen=True)
class Item:
    type: str          # product | service
    code: str          # sku or service code
    name: str
    product_type: str
    batch_prefix: str | None = None  # products and dyes carry a batch
    weight: int = 1


CATALOGUE = (
    Item("product", "SK-HY01", "玻尿酸补水精华", "skincare", "SK", 4),
    Item("product", "SK-CR02", "修护面霜", "skincare", "SK", 3),
    Item("product", "CO-LP01", "丝绒雾面口红", "cosmetics", "CO", 2),
    Item("product", "CO-FD02", "持妆粉底液", "cosmetics", "CO", 2),
    Item("product", "FR-WT01", "白茶淡香水", "fragrance", "FR", 2),
    Item("product", "HC-SH01", "氨基酸洗发水", "other", "HC", 2),
    Item("service", "HAIR-DYE", "染发", "hair_colour", "DYE-6N-", 4),
    Item("service", "PERM-01", "烫发", "perm", None, 2),
    Item("service", "FACE-01", "深层清洁护理", "treatment", None, 3),
    Item("service", "SCALP-01", "头皮护理", "treatment", None, 2),
    Item("service", "HAIRCUT", "洗剪吹", "other", None, 12),  # the most common: no return visit
)


@dataclass(frozen=True)
class Staff:
    """One branch's people: the front desk posts, its CRM (a branch_integration) posts sales and
    online complaints, the store manager assigns and approves, owners work cases, an agent calls."""

    branch: Branch
    front_desk: Person
    crm: Person
    manager: Person
    owners: tuple[Person, ...]
    agent: Person
    technicians: tuple[str, ...]


@dataclass
class CasePlan:
    """What the staff will do with a case: which template's findings and remedy, which tasks
    they do late (past the deadline), whom praise goes to, how a suggestion is decided."""

    template: texts.Complaint | None = None
    remedy: tuple[str, float, str] | None = None
    late: frozenset[str] = frozenset()
    technician: str | None = None
    decision: str | None = None
    batch: str | None = None


@dataclass(order=True)
class Post:
    at: datetime
    branch: str = field(compare=False)
    kind: str = field(compare=False)  # complaint | suggestion | praise | sale
    body: dict = field(compare=False)
    poster: Person = field(compare=False)
    plan: CasePlan | None = field(default=None, compare=False)
    allergy_cluster: bool = field(default=False, compare=False)  # a sale whose dye gives an allergy


class Chain:
    def __init__(self, policy, count: int, seed: int, first_day: date):
        if count < 1:
            raise DemoError("--branches must be at least 1")
        if count > len(policy.branches):
            raise DemoError(f"--branches {count}: the policy has {len(policy.branches)} branches "
                            f"({', '.join(policy.branches)})")
        self.seed = seed
        self.branches = [policy.branches[code] for code in list(policy.branches)[:count]]
        self.staff = {b.code: self._staff(b) for b in self.branches}
        self.hq = Person("HQ-admin-01", "hq_admin", branch="*")
        intake = policy.sections.get("intake")
        categories = set(intake.categories) if intake is not None else set(WEIGHTS)
        self.templates = [t for t in texts.COMPLAINTS if t.category in categories]
        self.catalogue = [i for i in CATALOGUE if i.product_type in policy.product_types]
        self.allergy_batch = f"DYE-7R-{first_day:%y%m}C"  # one dye batch, chain-wide
        order = sorted({t.category for t in self.templates})
        random.Random(seed).shuffle(order)
        self._first_categories = iter(order)  # every category comes once before the mix takes over
        self._sequence = itertools.count(1)

    @staticmethod
    def _staff(branch: Branch) -> Staff:
        code = branch.code
        return Staff(branch, Person(f"{code}-F01", "front_desk", branch=code),
                     Person(f"{code}-CRM", "branch_integration", branch=code),
                     Person(f"{code}-M01", "store_manager", branch=code),
                     tuple(Person(f"{code}-S0{n}", "front_desk", branch=code) for n in (1, 2, 3)),
                     Person(f"{code}-A01", "aftercare_agent", branch=code),
                     tuple(f"{code}-T0{n}" for n in (1, 2, 3, 4)))

    def regional_manager(self, branch: str) -> Person:
        region = self.staff[branch].branch.region
        return Person(f"RM-{region}", "regional_manager", region=region)

    def person(self, role: str, branch: str) -> Person:
        """Who of the branch (or above it) acts in `role`."""
        staff = self.staff[branch]
        return {"store_manager": staff.manager, "regional_manager": self.regional_manager(branch),
                "hq_admin": self.hq, "front_desk": staff.front_desk,
                "aftercare_agent": staff.agent}.get(role, self.hq)

    def owner(self, subject: str | None, branch: str) -> Person | None:
        """A case's owner as a person of the branch (None: the owner is no one the demo plays)."""
        return next((p for p in self.staff[branch].owners if p.subject == subject), None)

    # -- a day's traffic ---------------------------------------------------------------------------

    def traffic(self, index: int, day: date) -> list[Post]:
        posts = []
        for number, branch in enumerate(self.branches):
            hours = branch.hours_on(day)
            if hours is None:  # closed (a holiday)
                continue
            rng = random.Random(f"{self.seed}:{day.isoformat()}:{branch.code}")
            opens = datetime.combine(day, time()).replace(tzinfo=branch.zone) + timedelta(minutes=hours[0])
            span = (hours[1] - hours[0] - 40) * 60

            def at(seconds=None) -> datetime:
                return opens + timedelta(seconds=rng.uniform(600, span) if seconds is None else seconds)

            weekend = day.weekday() >= 5
            if index == 0 and number == 0:  # the showcase: an allergy answered late, a remedy for the region
                posts.append(self.complaint(branch, at(40 * 60), rng, template=self.templates_of("safety")[0],
                                            category=None, late={"respond"}))
                posts.append(self.complaint(branch, at(90 * 60), rng, template=self.templates_of("service_quality")[1],
                                            flags=("serious_service_failure",), remedy=texts.LARGE_REMEDY))
            if index == 0 and number in (0, 1 % len(self.branches)):  # a chain-wide allergy cluster begins
                posts.append(self.sale(branch, at((5 + number) * 3600), rng, allergy_cluster=True))
            posts += [self.complaint(branch, at(), rng) for _ in range(2 + rng.randint(0, 2) + weekend)]
            if rng.random() < 0.45:
                posts.append(self.feedback(branch, at(), rng, "suggestion"))
            if rng.random() < 0.55 + 0.2 * weekend:
                posts.append(self.feedback(branch, at(), rng, "praise"))
            posts += [self.sale(branch, at(), rng) for _ in range(12 + rng.randint(0, 6) + 4 * weekend)]
        return sorted(posts)

    def templates_of(self, category: str) -> list[texts.Complaint]:
        return [t for t in self.templates if t.category == category]

    def complaint(self, branch: Branch, at: datetime, rng: random.Random, *, template=None, category="given",
                  flags=(), late=None, remedy=None) -> Post:
        if template is None:
            chosen = next(self._first_categories, None) or rng.choices(
                list(WEIGHTS), [WEIGHTS[c] for c in WEIGHTS])[0]
            template = rng.choice(self.templates_of(chosen) or self.templates)
        staff = self.staff[branch.code]
        channel = rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0]
        text = template.text
        if template.category != "safety" and rng.random() < 0.08:
            text += texts.MEDIA_THREAT  # urgent by intake's triage
        if category == "given":
            category = template.category if rng.random() < 0.6 else None  # else intake classifies the text
        technician = rng.choice(staff.technicians)
        body = {"kind": "complaint", "channel": channel, "customer": self.customer(rng, channel),
                "description": text, "occurred_at": isoformat(at - timedelta(hours=rng.uniform(0.2, 26))),
                "category": category, "severity_flags": list(flags or template.flags) or None}
        if template.service:
            body["service"] = {"code": template.service[0], "name": template.service[1], "technician_id": technician}
            if template.service[0] == "HAIR-DYE":
                body["products"] = [{"sku": "DYE-6N", "name": "染膏", "batch": self.batch("DYE-6N-", at, rng)}]
        if template.product:
            body["products"] = [{"sku": template.product[0], "name": template.product[1],
                                 "batch": self.batch(template.product[0][:2], at, rng)}]
        urgent = bool(flags or template.flags) or template.category == "safety" or texts.MEDIA_THREAT in text
        if late is None:  # some staff miss deadlines
            late = {"respond"} if rng.random() < (0.25 if urgent else 0.08) else set()
            if rng.random() < 0.08:
                late.add("notify_customer")
            if rng.random() < 0.1:
                late.add("fulfil")
            if rng.random() < 0.2:
                late.add("close_corrective_action")
        plan = CasePlan(template, remedy or template.remedy, frozenset(late))
        poster = staff.front_desk if channel in AT_THE_DESK else staff.crm
        return Post(at, branch.code, "complaint", body, poster, plan)

    def feedback(self, branch: Branch, at: datetime, rng: random.Random, kind: str) -> Post:
        staff = self.staff[branch.code]
        technician = rng.choice(staff.technicians)
        text = rng.choice(texts.SUGGESTIONS if kind == "suggestion" else texts.PRAISE).format(
            tech=f"技师{technician[-3:]}")
        channel = rng.choice(("front_desk", "wechat", "online_chat"))
        body = {"kind": kind, "channel": channel, "customer": self.customer(rng, channel), "description": text}
        plan = CasePlan(technician=technician, decision=rng.choice(("adopted", "declined")))
        return Post(at, branch.code, kind, body, staff.front_desk if channel in AT_THE_DESK else staff.crm, plan)

    def sale(self, branch: Branch, at: datetime, rng: random.Random, allergy_cluster: bool = False) -> Post:
        staff = self.staff[branch.code]
        if allergy_cluster:
            chosen = [next(i for i in CATALOGUE if i.product_type == "hair_colour")]
        else:
            chosen = []
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                item = rng.choices(self.catalogue, [i.weight for i in self.catalogue])[0]
                if item not in chosen:
                    chosen.append(item)
        items = []
        for item in chosen:
            line = {"type": item.type, ("sku" if item.type == "product" else "code"): item.code, "name": item.name,
                    "product_type": item.product_type}
            if item.batch_prefix:
                line["batch"] = self.allergy_batch if allergy_cluster else self.batch(item.batch_prefix, at, rng)
            if item.type == "service":
                line["technician_id"] = rng.choice(staff.technicians)
            items.append(line)
        customer = {**self.customer(rng, "front_desk"), "contact_consent": allergy_cluster or rng.random() < 0.85}
        body = {"customer": customer, "sold_at": isoformat(at), "items": items}
        return Post(at, branch.code, "sale", body, staff.crm, allergy_cluster=allergy_cluster)

    @staticmethod
    def batch(prefix: str, at: datetime, rng: random.Random) -> str:
        return f"{prefix}{at:%y%m}{rng.choice('AB')}"

    def customer(self, rng: random.Random, channel: str) -> dict:
        number = next(self._sequence)
        found = {"name": rng.choice(texts.SURNAMES) + rng.choice(texts.HONORIFICS),
                 "phone": f"1{rng.choice('3589')}{rng.randint(0, 9)}{number % 10000:04d}{rng.randint(0, 9999):04d}",
                 "language": "zh"}
        if channel == "email":
            found["email"] = f"guest{number}@example.com"
        return found

