"""Chain policy (version 2): the chain-wide part, each service's section (intake's
classification, triage, deadlines and templates; investigation's authority; aftercare's
visits), calendars and validation."""
import copy
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.aftercare import policy as aftercare_policy
from services.aftercare.policy import AftercareRules
from services.intake import policy as intake_policy
from services.intake.policy import IntakeRules
from services.investigation import policy as investigation_policy
from services.investigation.policy import InvestigationRules
from shared.calendar.branches import Branch
from shared.calendar.policy import (DEFAULT_POLICY_PATH, yaml_doc, yaml_text, ChainPolicy, Checker, PolicyError, check_policy,
                                    load_policy, parse_duration)

SHANGHAI = ZoneInfo("Asia/Shanghai")
SECTIONS = ("intake", "investigation", "aftercare", "reporting")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def policy() -> ChainPolicy:
    return load_policy()


@pytest.fixture(scope="module")
def rules(policy) -> IntakeRules:
    return policy.section("intake")


@pytest.fixture(scope="module")
def default_doc() -> dict:
    return yaml_doc(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))


def write_policy(tmp_path, doc: dict, name="policy.yaml"):
    path = tmp_path / name
    path.write_text(yaml_text(doc), encoding="utf-8")
    return path


# --- the default file -------------------------------------------------------------------------

def test_default_policy_loads_without_problems(policy, rules):
    assert check_policy(DEFAULT_POLICY_PATH) == []
    # Chain-wide.
    assert set(policy.branches) == {"SH001", "SH002", "BJ001", "GZ001"}
    assert all(isinstance(b, Branch) for b in policy.branches.values())
    assert policy.default_language == "zh"
    assert policy.product_types == ("skincare", "cosmetics", "fragrance", "hair_colour", "perm", "treatment",
                                    "other")
    assert set(policy.sections) == set(SECTIONS)
    # intake:
    assert isinstance(rules, IntakeRules)
    assert set(rules.categories) == {"service_quality", "product_quality", "hygiene_environment", "booking",
                                     "price", "staff_attitude", "after_sales", "safety"}
    assert set(rules.categories) == set(intake_policy.CATEGORY_CODES)
    assert rules.categories["safety"].label_zh == "安全"
    assert rules.default_category == "service_quality"
    assert rules.severity_flags == {"allergy", "burn", "injury", "infection", "legal_threat", "media_threat",
                                    "wide_reach", "serious_service_failure"} == intake_policy.SEVERITY_FLAGS
    assert rules.kinds == ("complaint", "suggestion", "praise", "inquiry")
    assert "online_chat" in rules.channels and rules.channels == intake_policy.CHANNELS
    assert rules.priorities == intake_policy.PRIORITIES == ("urgent", "general", "low")
    assert rules.first_response["urgent"] == timedelta(hours=1) and rules.around_the_clock == {"urgent"}
    assert rules.default_language == "zh"
    # investigation:
    investigation = policy.section("investigation")
    assert isinstance(investigation, InvestigationRules)
    assert investigation.authority["store_manager"].limit == 2000 and investigation.authority["hq_admin"].limit is None
    assert investigation.promises["redye"] == timedelta(days=10)
    # aftercare:
    aftercare = policy.section("aftercare")
    assert isinstance(aftercare, AftercareRules)
    assert aftercare.visit_delays["hair_colour"] == 2
    assert set(aftercare.visit_delays) <= set(policy.product_types)
    assert [t.strftime("%H:%M") for t in aftercare.contact_hours] == ["09:00", "21:00"]
    # reporting:
    reporting = policy.section("reporting")
    assert (reporting.recurring_problem.at_least, reporting.recurring_problem.within) == (3, timedelta(days=14))
    assert (reporting.safety_signal.at_least, reporting.safety_signal.within) == (2, timedelta(days=30))


def test_a_section_no_service_owns_is_not_there(policy):
    with pytest.raises(KeyError, match="console"):
        policy.section("console")


def test_region_lookup(policy):
    assert policy.branches_in_region("east") == ["SH001", "SH002"]
    assert policy.branches_in_region("north") == ["BJ001"]
    assert policy.branches_in_region("west") == []
    assert policy.regions() == {"east", "north", "south"}
    assert policy.branch("GZ001").timezone == "Asia/Shanghai"
    with pytest.raises(KeyError):
        policy.branch("XX999")


# --- classification and priority (intake) -----------------------------------------------------

@pytest.mark.parametrize("text, category", [
    ("染发后头皮过敏红肿", "safety"),
    ("前台态度很差", "staff_attitude"),
    ("服务态度很差", "staff_attitude"),
    ("The receptionist was rude", "staff_attitude"),
    ("I waited an hour past my appointment", "booking"),
    ("毛巾很脏", "hygiene_environment"),
    ("乱收费，价格和说好的不一样", "price"),
    ("要求退款", "after_sales"),
    ("买的面霜已经过期了", "product_quality"),
    ("头发剪坏了，两边不一样长", "service_quality"),
    ("My scalp BURNED after the perm", "safety"),
    ("用了你们的产品后过敏", "safety"),  # one hit each: safety wins the tie
    ("今天天气不错", "service_quality"),
    ("", "service_quality"),
])
def test_classify(rules, text, category):
    assert rules.classify(text) == category


@pytest.mark.parametrize("kind, category, flags, text, expected", [
    ("complaint", "safety", [], "染发后头皮过敏红肿", "urgent"),
    ("complaint", "staff_attitude", [], "前台态度很差", "general"),
    ("complaint", "price", [], "不处理我就找律师起诉你们", "urgent"),
    ("complaint", "price", [], "I'll call a journalist about this", "urgent"),
    ("complaint", "booking", [], "再不解决我就发到大众点评和抖音", "urgent"),
    ("complaint", "service_quality", [], "打１２３１５投诉", "urgent"),  # full-width digits
    ("complaint", "booking", ["legal_threat"], "waited too long", "urgent"),
    ("complaint", "service_quality", ["serious_service_failure"], "", "urgent"),
    ("complaint", "booking", [], "There is an issue with my booking", "general"),  # 'sue' is not in 'issue'
    ("suggestion", "safety", ["allergy"], "律师", "low"),
    ("praise", "staff_attitude", [], "Tony 服务很好", "low"),
])
def test_priority(rules, kind, category, flags, text, expected):
    assert rules.priority(kind, category, flags, text) == expected


def test_priority_rejects_unknown_kind_and_flag(rules):
    with pytest.raises(ValueError):
        rules.priority("rant", "price", [], "")
    with pytest.raises(ValueError, match="sunburn"):
        rules.priority("complaint", "price", ["sunburn"], "")


# --- deadlines (intake, on the branch's calendar) ---------------------------------------------

def as_local(deadline: datetime) -> datetime:
    assert deadline.utcoffset() == timedelta(0)  # deadlines come back in UTC
    return deadline.astimezone(SHANGHAI).replace(tzinfo=None)


def test_urgent_runs_around_the_clock(policy, rules):
    d = rules.deadlines("urgent", policy.branch("SH001"), local(2026, 11, 22, 23, 30).astimezone(timezone.utc))
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 0, 30)
    assert as_local(d.resolution_due) == datetime(2026, 11, 29, 23, 30)  # not moved either


def test_general_falling_after_closing_moves_to_next_opening(policy, rules):
    d = rules.deadlines("general", policy.branch("SH001"), local(2026, 11, 22, 23, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 24, 10, 0)
    assert as_local(d.resolution_due) == datetime(2026, 11, 30, 10, 0)


def test_general_inside_hours_unchanged(policy, rules):
    d = rules.deadlines("general", policy.branch("BJ001"), local(2026, 11, 22, 12, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 12, 0)
    assert as_local(d.resolution_due) == datetime(2026, 11, 29, 12, 0)


def test_low_is_72_hours(policy, rules):
    d = rules.deadlines("low", policy.branch("SH002"), local(2026, 11, 20, 12, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 12, 0)
    d = rules.deadlines("low", policy.branch("SH002"), local(2026, 11, 20, 9, 0))  # 09:00 is before opening
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 10, 0)


def test_holiday_moves_to_next_non_holiday_opening(policy, rules):
    d = rules.deadlines("general", policy.branch("BJ001"), local(2026, 12, 31, 12, 0))
    assert as_local(d.first_response_due) == datetime(2027, 1, 2, 10, 0)
    d = rules.deadlines("general", policy.branch("SH001"), local(2027, 2, 5, 15, 0))  # Spring Festival 02-06..02-12
    assert as_local(d.first_response_due) == datetime(2027, 2, 13, 10, 0)
    # GZ001 reopens on 2027-02-12 (an extra working day) with its short hours.
    d = rules.deadlines("general", policy.branch("GZ001"), local(2027, 2, 5, 15, 0))
    assert as_local(d.first_response_due) == datetime(2027, 2, 12, 12, 0)


def test_deadlines_need_aware_time_and_known_branch(policy, rules):
    branch = policy.branch("SH001")
    with pytest.raises(ValueError):
        rules.deadlines("general", branch, datetime(2026, 11, 22, 12, 0))
    with pytest.raises(ValueError):  # urgent deadlines are not moved, but still need an aware time
        rules.deadlines("urgent", branch, datetime(2026, 11, 22, 12, 0))
    with pytest.raises(KeyError):  # an unknown branch has no calendar to give
        rules.deadlines("general", policy.branch("XX999"), local(2026, 11, 22, 12, 0))
    with pytest.raises(ValueError):
        rules.deadlines("soon", branch, local(2026, 11, 22, 12, 0))


def test_opening_bounds(policy):
    branch = policy.branch("SH001")
    assert branch.is_open(local(2026, 11, 23, 10, 0))
    assert not branch.is_open(local(2026, 11, 23, 22, 0))  # closing time is exclusive
    assert not branch.is_open(local(2027, 1, 1, 12, 0))
    open_instant = local(2026, 11, 23, 15, 0)
    assert branch.next_opening(open_instant) is open_instant
    midnight_utc = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)  # 08:00 in Shanghai
    assert branch.next_opening(midnight_utc) == local(2026, 11, 23, 10, 0)
    with pytest.raises(ValueError):
        branch.is_open(datetime(2026, 11, 23, 12, 0))  # naive


def test_extra_working_day_opens_a_normally_closed_weekday(tmp_path, default_doc):
    doc = copy.deepcopy(default_doc)
    doc["calendar"] = {}
    doc["branches"] = {"TEST1": {
        "name": "测试店", "region": "east",
        "opening_hours": {"mon": "09:00-18:00", "tue": "09:00-18:00", "wed": "09:00-18:00",
                          "thu": "09:00-18:00", "fri": "09:00-18:00", "sat": None, "sun": None},
        "holidays": ["2026-11-30"], "extra_working_days": ["2026-11-28"]}}
    policy = load_policy(write_policy(tmp_path, doc))
    rules = policy.section("intake")
    branch = policy.branch("TEST1")
    assert branch.is_open(local(2026, 11, 28, 12, 0))       # Saturday, 调休: open with weekday hours
    assert not branch.is_open(local(2026, 11, 28, 18, 30))
    assert not branch.is_open(local(2026, 11, 29, 12, 0))   # Sunday
    d = rules.deadlines("general", branch, local(2026, 11, 27, 12, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 28, 12, 0)
    # Sunday closed, Monday a holiday: Tuesday's opening.
    d = rules.deadlines("general", branch, local(2026, 11, 28, 17, 0))
    assert as_local(d.first_response_due) == datetime(2026, 12, 1, 9, 0)


# --- acknowledgement (intake) -----------------------------------------------------------------

def test_customer_messages_defaults_sms_countries_and_long_names(policy, rules):
    limits = rules.customer_messages
    assert limits.sms_country_codes == ("+86",)
    assert (limits.per_recipient.messages, limits.per_recipient.per) == (3, timedelta(hours=1))
    assert (limits.per_poster.messages, limits.per_poster.per) == (120, timedelta(minutes=1))
    assert limits.sms_allowed("13812346138") and limits.sms_allowed("02112345678")
    assert limits.sms_allowed("+8613812346138") and not limits.sms_allowed("+12025550123")
    assert not limits.sms_allowed("+85291234567")
    due = datetime(2026, 11, 22, 4, 0, tzinfo=timezone.utc)
    long_name = "Abcdefghij Klmnopqrstu"  # 22 characters: not repeated to the customer
    text = rules.acknowledgement("en", name=long_name, reference="R", kind="praise", first_response_due=due,
                                 branch=policy.branch("SH001"))
    assert text.startswith("Dear customer,") and long_name not in text


def test_acknowledgement_texts(policy, rules):
    due = local(2026, 11, 22, 16, 5).astimezone(timezone.utc)
    zh = rules.acknowledgement("zh", name="王女士", reference="SH001-20261122-0007", kind="complaint",
                               first_response_due=due, branch=policy.branch("SH001"))
    assert zh.startswith("王女士，您好！")
    assert "SH001-20261122-0007" in zh and "投诉" in zh and "2026-11-22 16:05" in zh
    assert "上海静安店" in zh  # {branch_name}, from the Branch given
    en = rules.acknowledgement("en-GB", name=None, reference="BJ001-20261122-0001", kind="suggestion",
                               first_response_due=due, branch=policy.branch("BJ001"))
    assert en.startswith("Dear customer,") and "suggestion" in en and "2026-11-22 16:05" in en
    fallback = rules.acknowledgement("fr", name="Anne", reference="R", kind="praise",
                                     first_response_due=due, branch=policy.branch("SH001"))
    assert fallback.startswith("Anne，您好！") and "表扬" in fallback
    with pytest.raises(ValueError):
        rules.acknowledgement("zh", name=None, reference="R", kind="rant", first_response_due=due,
                              branch=policy.branch("SH001"))


@pytest.mark.parametrize("asked, language", [("zh-CN", "zh"), ("EN_gb", "en"), ("fr", "zh"), (None, "zh"),
                                             ("", "zh")])
def test_language_falls_back_to_the_chain_default(rules, asked, language):
    assert rules.language(asked) == language


# --- validation -------------------------------------------------------------------------------

def mutate(doc, change):
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


BAD_POLICIES = [
    # chain-wide
    ("unknown branch key", lambda d: d["branches"]["SH001"].update(colour="pink"), "branches.SH001.colour"),
    ("bad time zone", lambda d: d["branches"]["SH001"].update(timezone="Mars/Olympus"), "Mars/Olympus"),
    ("hour 25", lambda d: d["branches"]["BJ001"].update(opening_hours="25:00-22:00"),
     "25:00 is not a valid time"),
    ("close before open", lambda d: d["branches"]["BJ001"].update(opening_hours="22:00-10:00"),
     "closes before it opens"),
    ("unquoted time", lambda d: d["branches"]["BJ001"].update(opening_hours=600), "HH:MM-HH:MM"),
    ("weekday missing", lambda d: d["branches"]["SH002"]["opening_hours"].pop("sun"),
     "branches.SH002.opening_hours.sun"),
    ("region missing", lambda d: d["branches"]["GZ001"].pop("region"), "branches.GZ001.region: missing"),
    ("bad branch code", lambda d: d["branches"].update({"sh-3": d["branches"]["SH001"]}), "branches.sh-3"),
    ("bad holiday", lambda d: d["calendar"].update(holidays=["2027-02-30"]), "calendar.holidays[0]"),
    ("never open", lambda d: d["branches"]["SH002"].update(opening_hours=dict.fromkeys(
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"])), "the branch is never open"),
    ("no product types", lambda d: d.update(product_types=[]), "product_types: list the product"),
    ("bad default language", lambda d: d.update(default_language="Chinese"), "default_language: a language"),
    ("unknown top-level key", lambda d: d.update(colour="pink"), "policy.colour: unknown key"),
    ("section missing", lambda d: d.pop("investigation"), "investigation: missing"),
    ("retention zero", lambda d: d["retention"].update(idempotency_keys="P0D"),
     "retention.idempotency_keys: 'P0D' is not a positive duration"),
    ("retention negative", lambda d: d["retention"].update(inbox="-P30D"),
     "retention.inbox: '-P30D' is not a duration"),
    ("retention a bare number", lambda d: d["retention"].update(idempotency_keys=7),
     "retention.idempotency_keys: 7 is not a duration"),
    ("inbox shorter than a redelivery", lambda d: d["retention"].update(inbox="PT1H"),
     "retention.inbox: 'PT1H' is too short"),
    ("retention of centuries", lambda d: d["retention"].update(inbox="P99999999D"),
     "retention.inbox: 'P99999999D' is longer than 3660 days"),
    ("unknown retention key", lambda d: d["retention"].update(outbox="P1D"), "retention.outbox: unknown key"),
    ("personal data not a duration", lambda d: d["retention"].update(personal_data="3 years"),
     "retention.personal_data: '3 years' is not a duration like P3Y"),
    ("personal data negative", lambda d: d["retention"].update(personal_data="-P3Y"),
     "retention.personal_data: '-P3Y' is not a duration"),
    ("personal data zero", lambda d: d["retention"].update(personal_data="P0Y"),
     "retention.personal_data: 'P0Y' is not a positive duration"),
    ("personal data a bare number", lambda d: d["retention"].update(personal_data=3),
     "retention.personal_data: 3 is not a duration"),
    ("personal data under a year", lambda d: d["retention"].update(personal_data="P3M"),
     "retention.personal_data: 'P3M' is too short: keep personal data at least a year"),
    ("personal data for ever", lambda d: d["retention"].update(personal_data="P11Y"),
     "retention.personal_data: 'P11Y' is longer than 3660 days"),
    ("section not a mapping", lambda d: d.update(aftercare=["skincare"]), "aftercare: must be a mapping"),
    # intake:
    ("unknown category in keywords", lambda d: d["intake"]["keywords"].update(nails={"zh": ["美甲"]}),
     "intake.keywords.nails: unknown key"),
    ("category missing", lambda d: d["intake"]["categories"].pop("price"), "intake.categories.price: missing"),
    ("bad default category", lambda d: d["intake"].update(default_category="nails"),
     "intake.default_category: unknown category 'nails'"),
    ("deadline not a duration", lambda d: d["intake"]["deadlines"]["first_response"].update(general="24 hours"),
     "intake.deadlines.first_response.general: "),
    ("deadline zero", lambda d: d["intake"]["deadlines"]["resolution"].update(low="PT0H"),
     "intake.deadlines.resolution.low: 'PT0H' is not a positive duration"),
    ("unknown flag", lambda d: d["intake"]["triage"]["urgent_flags"].append("sunburn"),
     "intake.triage.urgent_flags: unknown severity flag 'sunburn'"),
    ("unknown placeholder", lambda d: d["intake"]["acknowledgement"]["en"].update(text="Hi {customer}"),
     "intake.acknowledgement.en.text: unknown placeholder {customer}"),
    ("unknown intake key", lambda d: d["intake"].update(colour="pink"), "intake.colour: unknown key"),
    ("country code without its plus", lambda d: d["intake"]["customer_messages"].update(sms_country_codes=["86"]),
     "intake.customer_messages.sms_country_codes: '86' is not a country code"),
    ("limit of no messages", lambda d: d["intake"]["customer_messages"]["per_recipient"].update(messages=0),
     "intake.customer_messages.per_recipient.messages: 0 is not a whole number from 1 to 1,000,000"),
    # beyond what the SQL counter takes, and a window whose start PostgreSQL cannot write: refused
    ("limit of too many messages",
     lambda d: d["intake"]["customer_messages"]["per_recipient"].update(messages=99_999_999_999),
     "intake.customer_messages.per_recipient.messages: 99999999999 is not a whole number from 1 to 1,000,000"),
    ("limit over too long", lambda d: d["intake"]["customer_messages"]["per_poster"].update(per="P100000D"),
     "intake.customer_messages.per_poster.per: 'P100000D' is longer than 3660 days"),
    ("deadline too long", lambda d: d["intake"]["deadlines"]["resolution"].update(low="P3000000D"),
     "intake.deadlines.resolution.low: 'P3000000D' is longer than 3660 days"),
    ("limit over no time", lambda d: d["intake"]["customer_messages"]["per_poster"].update(per="PT0M"),
     "intake.customer_messages.per_poster.per: 'PT0M' is not a positive duration"),
    ("limit without its period", lambda d: d["intake"]["customer_messages"]["per_poster"].pop("per"),
     "intake.customer_messages.per_poster.per: missing"),
    ("a template with an unknown placeholder", lambda d: d["intake"]["acknowledgement"]["zh"].update(
        greeting="{name}{description}"), "intake.acknowledgement.zh.greeting: unknown placeholder {description}"),
    ("default language without a template", lambda d: d.update(default_language="fr"),
     "intake.acknowledgement: the default language 'fr' has no template"),
    # investigation:
    ("negative authority", lambda d: d["investigation"]["authority"].update(front_desk=-5),
     "investigation.authority.front_desk: -5 is not an amount"),
    ("unknown remedy type in authority", lambda d: d["investigation"]["authority"].update(
        front_desk={"limit": 200, "types": ["gift", "massage"]}),
     "investigation.authority.front_desk: 'massage' is not a remedy type"),
    ("types and except together", lambda d: d["investigation"]["authority"].update(
        front_desk={"limit": 200, "types": ["gift"], "except": ["refund"]}),
     "investigation.authority.front_desk: give types (only these) or except (all but these), not both"),
    ("nobody without a limit", lambda d: d["investigation"]["authority"].update(hq_admin=50000),
     "investigation.authority: no role may grant without limit"),
    ("unknown remedy type in promises", lambda d: d["investigation"].update(promises={"facial": "P3D"}),
     "investigation.promises.facial: unknown remedy type"),
    ("unknown role in authority", lambda d: d["investigation"]["authority"].update(janitor=50),
     "investigation.authority.janitor: unknown role"),
    ("unknown investigation key", lambda d: d["investigation"].update(colour="pink"),
     "investigation.colour: unknown key"),
    # aftercare:
    ("bad visit delay", lambda d: d["aftercare"]["visit_delays"].update(skincare="a week"),
     "aftercare.visit_delays.skincare: 'a week' is not a positive number of days"),
    ("visit delay too long", lambda d: d["aftercare"]["visit_delays"].update(skincare=10 ** 9),
     "aftercare.visit_delays.skincare: 1000000000 is not a positive number of days (at most 3660)"),
    ("visit delay for an unknown product type", lambda d: d["aftercare"]["visit_delays"].update(nails=5),
     "aftercare.visit_delays.nails: unknown product type"),
    ("product type with a visit delay removed", lambda d: d["product_types"].remove("perm"),
     "aftercare.visit_delays.perm: unknown product type"),
    ("bad contact hours", lambda d: d["aftercare"].update(contact_hours="21:00-09:00"),
     "aftercare.contact_hours: '21:00-09:00' closes before it opens"),
    ("no call attempts", lambda d: d["aftercare"].update(call_attempts=0),
     "aftercare.call_attempts: 0 is not a number of calls from 1 to 10"),
    ("a single complaint a recurring problem", lambda d: d["reporting"]["recurring_problem"].update(at_least=1),
     "reporting.recurring_problem.at_least: 1 is not a count from 2 to 1000"),
    ("an unknown reporting rule", lambda d: d["reporting"].update(complaints_per_day=5),
     "reporting.complaints_per_day: unknown key (expected one of recurring_problem, safety_signal)"),
    ("follow-up after no time", lambda d: d["aftercare"].update(follow_up_after="PT0S"),
     "aftercare.follow_up_after: 'PT0S' is not a duration"),
    ("abandon after a non-duration", lambda d: d["aftercare"].update(abandon_after="a week"),
     "aftercare.abandon_after:"),
    # investigation's approval clock and adverse reactions:
    ("approval deadline not a duration", lambda d: d["investigation"]["sla"].update(approval="soon"),
     "investigation.sla.approval:"),
    ("unknown adverse reaction key", lambda d: d["investigation"].update(adverse_reaction={"triage": "PT1H"}),
     "investigation.adverse_reaction.triage: unknown key"),
]


@pytest.mark.parametrize("label, change, expected", BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES])
def test_each_problem_is_named(tmp_path, default_doc, label, change, expected):
    path = write_policy(tmp_path, mutate(default_doc, change))
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems
    assert expected in str(raised.value)
    assert check_policy(path) == raised.value.problems


def test_retention_defaults_and_overrides(tmp_path, default_doc, policy):
    assert (policy.retention.idempotency_keys, policy.retention.inbox, policy.retention.notifications) == \
        (timedelta(days=7), timedelta(days=30), timedelta(days=30))
    assert load_policy(write_policy(tmp_path, mutate(default_doc, lambda d: d.pop("retention")))).retention == \
        policy.retention  # a chain's file from before retention keeps the defaults
    changed = load_policy(write_policy(tmp_path, mutate(default_doc, lambda d: d.update(
        retention={"idempotency_keys": "PT36H", "inbox": "P90D"}))))
    assert (changed.retention.idempotency_keys, changed.retention.inbox) == (timedelta(hours=36), timedelta(days=90))


def test_personal_data_is_kept_three_years_after_closure_by_default_counted_on_the_calendar(
        tmp_path, default_doc, policy):
    from shared.calendar.policy import Period, Retention, parse_period

    assert policy.retention.personal_data == Retention().personal_data == parse_period("P3Y")
    closed_by = policy.retention.personal_data.before
    assert closed_by(datetime(2029, 11, 22, 2, 0, tzinfo=timezone.utc)) == datetime(2026, 11, 22, 2, 0,
                                                                                    tzinfo=timezone.utc)
    assert closed_by(datetime(2028, 2, 29, tzinfo=timezone.utc)) == datetime(2025, 2, 28, tzinfo=timezone.utc)
    assert parse_period("p1y6m").before(datetime(2027, 8, 31, tzinfo=timezone.utc)) == \
        datetime(2026, 2, 28, tzinfo=timezone.utc)
    assert parse_period("P400DT12H").before(datetime(2027, 1, 1, tzinfo=timezone.utc)) == \
        datetime(2025, 11, 26, 12, tzinfo=timezone.utc)
    assert str(parse_period(" P2Y ")) == "P2Y" and parse_period("P52W") == Period("P52W", 0, timedelta(weeks=52))
    for wrong in ("P", "PT", "P1YT", "3Y", "P1.5Y", "P-1Y", "", None):
        with pytest.raises(ValueError):
            parse_period(wrong)
    changed = load_policy(write_policy(tmp_path, mutate(default_doc, lambda d: d["retention"].update(
        personal_data="P18M"))))
    assert changed.retention.personal_data.months == 18 and changed.retention.inbox == timedelta(days=30)
    assert check_policy(write_policy(tmp_path, mutate(default_doc, lambda d: d["retention"].update(
        personal_data="P1Y")))) == []


def test_inbox_retention_outlasts_every_retry_delay(tmp_path, default_doc, monkeypatch):
    """With handler retries spread over three days, a two-day inbox would forget an event
    that may still be redelivered."""
    monkeypatch.setenv("CLOSELOOP_RETRY_DELAYS_MS", "60000,86400000,172800000")
    path = write_policy(tmp_path, mutate(default_doc, lambda d: d["retention"].update(inbox="P2D")))
    assert check_policy(path) == ["retention.inbox: 'P2D' is too short: keep the inbox longer than a day and "
                                  "than every retry of a failing handler (3 days, 0:01:00 in all), so that a "
                                  "redelivered or replayed event is still recognised"]
    monkeypatch.delenv("CLOSELOOP_RETRY_DELAYS_MS")
    assert check_policy(path) == []


def test_every_problem_is_reported_at_once(tmp_path, default_doc):
    labels = {"unknown branch key", "bad time zone", "hour 25", "weekday missing", "region missing",
              "unknown category in keywords", "deadline zero", "unknown placeholder", "negative authority",
              "visit delay for an unknown product type"}
    chosen = [b for b in BAD_POLICIES if b[0] in labels]
    assert len(chosen) == len(labels)
    doc = default_doc
    for _, change, _ in chosen:
        doc = mutate(doc, change)
    problems = check_policy(write_policy(tmp_path, doc))
    assert len(problems) == len(chosen), problems
    for _, _, expected in chosen:
        assert any(expected in p for p in problems), (expected, problems)


def test_each_section_is_validated_by_its_owner_under_its_own_name(tmp_path, default_doc):
    """One problem in each service's section: all three reported together, each at its place."""
    def change(d):
        d["intake"]["deadlines"]["first_response"]["urgent"] = "soon"
        d["investigation"]["authority"]["front_desk"] = "lots"
        d["aftercare"]["visit_delays"]["skincare"] = 0
    problems = check_policy(write_policy(tmp_path, mutate(default_doc, change)))
    assert len(problems) == 3, problems
    aftercare, intake, investigation = sorted(problems)
    assert aftercare.startswith("aftercare.visit_delays.skincare: ") and "positive number of days" in aftercare
    assert intake.startswith("intake.deadlines.first_response.urgent: ") and "SOON" in intake
    assert investigation.startswith("investigation.authority.front_desk: ") and "'lots'" in investigation


@pytest.mark.parametrize("name, load, raw, expected", [
    ("intake", intake_policy.load_section, {"keywords": {"bogus": {}}}, "intake.keywords.bogus: unknown key"),
    ("investigation", investigation_policy.load_section, {"authority": {"wizard": 1}},
     "investigation.authority.wizard: unknown role"),
    ("aftercare", aftercare_policy.load_section, {"visit_delays": {"nails": 3}},
     "aftercare.visit_delays.nails: unknown product type"),
])
def test_a_service_loads_its_own_section_through_the_checker(policy, name, load, raw, expected):
    c = Checker()
    load(c, raw, policy)
    assert any(p.startswith(expected) for p in c.problems), c.problems
    assert all(p.startswith(f"{name}.") or p.startswith(f"{name}:") for p in c.problems), c.problems


def test_the_sections_own_loaders_accept_the_default_sections(policy, default_doc):
    c = Checker()
    aftercare = aftercare_policy.load_section(c, copy.deepcopy(default_doc["aftercare"]), policy)
    investigation = investigation_policy.load_section(c, copy.deepcopy(default_doc["investigation"]), policy)
    intake = intake_policy.load_section(c, copy.deepcopy(default_doc["intake"]), policy)
    assert c.problems == []
    assert aftercare.contact_hours == (time(9, 0), time(21, 0))
    assert investigation.authority == policy.section("investigation").authority
    assert intake.classify("毛巾很脏") == "hygiene_environment"


def version_1(doc: dict) -> dict:
    """The same rules laid out as a version-1 file: every rule at the top level."""
    flat = {k: copy.deepcopy(v) for k, v in doc.items() if k not in SECTIONS}
    for section in SECTIONS:
        flat.update(copy.deepcopy(doc[section]))
    flat["version"] = 1
    return flat


HINT = "move them under intake:, investigation: and aftercare:"


@pytest.mark.parametrize("with_version", [True, False])
def test_a_version_1_file_is_refused_with_a_hint(tmp_path, default_doc, with_version):
    doc = version_1(default_doc)
    if not with_version:  # version 1 files did not always say so
        del doc["version"]
    path = write_policy(tmp_path, doc)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    [version] = [p for p in raised.value.problems if p.startswith("version:")]
    assert version.startswith("version: must be 2") and HINT in version
    assert HINT in str(raised.value)
    # Only that: the rest, read with the wrong layout, would bury the hint in noise.
    assert raised.value.problems == [version]


def test_a_later_version_is_refused_without_the_version_1_hint(tmp_path, default_doc):
    problems = check_policy(write_policy(tmp_path, mutate(default_doc, lambda d: d.update(version=3))))
    assert problems == ["version: must be 2"]


def test_duplicate_branch_code(tmp_path):
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace("  BJ001:", "  SH001:", 1)
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    assert any("duplicate key 'SH001'" in p for p in check_policy(path))


def test_unreadable_files_are_problems_too(tmp_path):
    assert "cannot read" in check_policy(tmp_path / "missing.yaml")[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("branches: [unclosed\n", encoding="utf-8")
    assert "not valid YAML" in check_policy(broken)[0]
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert check_policy(empty) == ["policy: must be a mapping of sections"]


@pytest.mark.parametrize("text, expected", [
    ("PT1H", timedelta(hours=1)), ("PT24H", timedelta(hours=24)), ("P7D", timedelta(days=7)),
    ("PT30M", timedelta(minutes=30)), ("P1DT12H", timedelta(days=1, hours=12)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "7D", "P1DT", "PT0M", "1 hour", None])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text, message", [
    ("P3661D", "'P3661D' is longer than 3660 days"),
    ("PT87865H", "'PT87865H' is longer than 3660 days"),
    ("P3000000D", "'P3000000D' is longer than 3660 days"),   # a deadline Python's dates overflow on
    ("P999999999999D", "is not a duration"),                  # no "Python int too large to convert"
    ("P" + "9" * 5000 + "D", "is not a duration"),
])
def test_no_policy_duration_is_longer_than_ten_years(text, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("text, problem", [
    ("version: 2\nbranches: {}\x00", "not valid YAML"),
    ("version: 2\nx: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
     "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nversion: 2\ndefault_timezone: *g\n"
     "calendar: {holidays: [*g], extra_working_days: *g}\n", "default_timezone: unknown time zone a list"),
], ids=["NUL", "deep", "alias bomb"])
def test_hostile_files_give_problems_not_tracebacks_or_hangs(tmp_path, text, problem):
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    problems = check_policy(path)
    assert any(problem in p for p in problems), problems
    assert all(len(p) < 400 for p in problems)


def test_a_template_that_cannot_be_filled_in_and_a_huge_duration_are_problems(tmp_path, default_doc):
    doc = copy.deepcopy(default_doc)
    doc["intake"]["acknowledgement"]["zh"]["greeting"] = "{name:d}，您好！"
    doc["intake"]["acknowledgement"]["en"]["text"] = "{greeting} by {due:%Y}"
    doc["intake"]["deadlines"]["first_response"]["urgent"] = "PT99999999999999999999H"
    problems = check_policy(write_policy(tmp_path, doc))
    assert any(p.startswith("intake.acknowledgement.zh.greeting: the template cannot be filled in") for p in problems)
    assert any(p.startswith("intake.acknowledgement.en.text: the template cannot be filled in") for p in problems)
    assert any(p.startswith("intake.deadlines.first_response.urgent:") for p in problems)


def test_the_default_inbox_retention_is_checked_too(tmp_path, default_doc, monkeypatch):
    monkeypatch.setenv("CLOSELOOP_RETRY_DELAYS_MS", "60000,3000000000")  # the last one is 34.7 days
    path = write_policy(tmp_path, mutate(default_doc, lambda d: d.pop("retention")))
    assert [p.split(":")[0] for p in check_policy(path)] == ["retention.inbox"]
    assert "the default (30 days) is too short" in check_policy(path)[0]


def test_the_load_policy_of_the_bench_and_the_compose_test_passes_the_check(tmp_path):
    """Intake refuses to start on a policy the check refuses: the compose test's replicas
    would restart in a loop."""
    from shared.testing.samples import policy_for_load

    limits = load_policy(policy_for_load(str(tmp_path))).section("intake").customer_messages
    assert limits.per_poster.messages == limits.per_recipient.messages == 1_000_000
