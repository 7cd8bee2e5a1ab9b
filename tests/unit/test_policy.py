"""Chain policy: classification, triage, deadlines, calendars, templates and validation."""
import copy
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import yaml

from shared.calendar.policy import (DEFAULT_POLICY_PATH, ChainPolicy, PolicyError, check_policy, load_policy,
                           parse_duration)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def policy() -> ChainPolicy:
    return load_policy()


@pytest.fixture(scope="module")
def default_doc() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))


def write_policy(tmp_path, doc: dict, name="policy.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# --- the default file -------------------------------------------------------------------------

def test_default_policy_loads_without_problems(policy):
    assert check_policy(DEFAULT_POLICY_PATH) == []
    assert set(policy.branches) == {"SH001", "SH002", "BJ001", "GZ001"}
    assert set(policy.categories) == {"service_quality", "product_quality", "hygiene_environment", "booking",
                                      "price", "staff_attitude", "after_sales", "safety"}
    assert policy.categories["safety"].label_zh == "安全"
    assert policy.severity_flags == {"allergy", "burn", "injury", "infection", "legal_threat", "media_threat",
                                     "wide_reach", "serious_service_failure"}
    assert policy.kinds == ("complaint", "suggestion", "praise")
    assert "online_chat" in policy.channels
    assert policy.authority["store_manager"] == 2000 and policy.authority["hq_admin"] is None
    assert policy.visit_delays["hair_colour"] == 2
    assert [t.strftime("%H:%M") for t in policy.contact_hours] == ["09:00", "21:00"]


def test_region_lookup(policy):
    assert policy.branches_in_region("east") == ["SH001", "SH002"]
    assert policy.branches_in_region("north") == ["BJ001"]
    assert policy.branches_in_region("west") == []
    assert policy.regions() == {"east", "north", "south"}
    assert policy.branch("GZ001").timezone == "Asia/Shanghai"
    with pytest.raises(KeyError):
        policy.branch("XX999")


# --- classification and priority --------------------------------------------------------------

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
def test_classify(policy, text, category):
    assert policy.classify(text) == category


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
def test_priority(policy, kind, category, flags, text, expected):
    assert policy.priority(kind, category, flags, text) == expected


def test_priority_rejects_unknown_kind_and_flag(policy):
    with pytest.raises(ValueError):
        policy.priority("rant", "price", [], "")
    with pytest.raises(ValueError, match="sunburn"):
        policy.priority("complaint", "price", ["sunburn"], "")


# --- deadlines --------------------------------------------------------------------------------

def as_local(deadline: datetime) -> datetime:
    assert deadline.utcoffset() == timedelta(0)  # deadlines come back in UTC
    return deadline.astimezone(SHANGHAI).replace(tzinfo=None)


def test_urgent_runs_around_the_clock(policy):
    d = policy.deadlines("urgent", "SH001", local(2026, 11, 22, 23, 30).astimezone(timezone.utc))
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 0, 30)
    assert as_local(d.resolution_due) == datetime(2026, 11, 29, 23, 30)  # not moved either


def test_general_falling_after_closing_moves_to_next_opening(policy):
    d = policy.deadlines("general", "SH001", local(2026, 11, 22, 23, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 24, 10, 0)
    assert as_local(d.resolution_due) == datetime(2026, 11, 30, 10, 0)


def test_general_inside_hours_unchanged(policy):
    d = policy.deadlines("general", "BJ001", local(2026, 11, 22, 12, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 12, 0)
    assert as_local(d.resolution_due) == datetime(2026, 11, 29, 12, 0)


def test_low_is_72_hours(policy):
    d = policy.deadlines("low", "SH002", local(2026, 11, 20, 12, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 12, 0)
    d = policy.deadlines("low", "SH002", local(2026, 11, 20, 9, 0))  # 09:00 is before opening
    assert as_local(d.first_response_due) == datetime(2026, 11, 23, 10, 0)


def test_holiday_moves_to_next_non_holiday_opening(policy):
    d = policy.deadlines("general", "BJ001", local(2026, 12, 31, 12, 0))
    assert as_local(d.first_response_due) == datetime(2027, 1, 2, 10, 0)
    d = policy.deadlines("general", "SH001", local(2027, 2, 5, 15, 0))  # Spring Festival 02-06..02-12
    assert as_local(d.first_response_due) == datetime(2027, 2, 13, 10, 0)
    # GZ001 reopens on 2027-02-12 (an extra working day) with its short hours.
    d = policy.deadlines("general", "GZ001", local(2027, 2, 5, 15, 0))
    assert as_local(d.first_response_due) == datetime(2027, 2, 12, 12, 0)


def test_deadlines_need_aware_time_and_known_branch(policy):
    with pytest.raises(ValueError):
        policy.deadlines("general", "SH001", datetime(2026, 11, 22, 12, 0))
    with pytest.raises(KeyError):
        policy.deadlines("general", "XX999", local(2026, 11, 22, 12, 0))
    with pytest.raises(ValueError):
        policy.deadlines("soon", "SH001", local(2026, 11, 22, 12, 0))


def test_opening_bounds(policy):
    branch = policy.branch("SH001")
    assert branch.is_open(local(2026, 11, 23, 10, 0))
    assert not branch.is_open(local(2026, 11, 23, 22, 0))  # closing time is exclusive
    assert not branch.is_open(local(2027, 1, 1, 12, 0))
    open_instant = local(2026, 11, 23, 15, 0)
    assert branch.next_opening(open_instant) is open_instant
    midnight_utc = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)  # 08:00 in Shanghai
    assert branch.next_opening(midnight_utc) == local(2026, 11, 23, 10, 0)


def test_extra_working_day_opens_a_normally_closed_weekday(tmp_path, default_doc):
    doc = copy.deepcopy(default_doc)
    doc["calendar"] = {}
    doc["branches"] = {"TEST1": {
        "name": "测试店", "region": "east",
        "opening_hours": {"mon": "09:00-18:00", "tue": "09:00-18:00", "wed": "09:00-18:00",
                          "thu": "09:00-18:00", "fri": "09:00-18:00", "sat": None, "sun": None},
        "holidays": ["2026-11-30"], "extra_working_days": ["2026-11-28"]}}
    policy = load_policy(write_policy(tmp_path, doc))
    branch = policy.branch("TEST1")
    assert branch.is_open(local(2026, 11, 28, 12, 0))       # Saturday, 调休: open with weekday hours
    assert not branch.is_open(local(2026, 11, 28, 18, 30))
    assert not branch.is_open(local(2026, 11, 29, 12, 0))   # Sunday
    d = policy.deadlines("general", "TEST1", local(2026, 11, 27, 12, 0))
    assert as_local(d.first_response_due) == datetime(2026, 11, 28, 12, 0)
    # Sunday closed, Monday a holiday: Tuesday's opening.
    d = policy.deadlines("general", "TEST1", local(2026, 11, 28, 17, 0))
    assert as_local(d.first_response_due) == datetime(2026, 12, 1, 9, 0)


# --- acknowledgement --------------------------------------------------------------------------

def test_acknowledgement_texts(policy):
    due = local(2026, 11, 22, 16, 5).astimezone(timezone.utc)
    zh = policy.acknowledgement("zh", name="王女士", reference="SH001-20261122-0007", kind="complaint",
                                first_response_due=due, branch_code="SH001")
    assert zh.startswith("王女士，您好！")
    assert "SH001-20261122-0007" in zh and "投诉" in zh and "2026-11-22 16:05" in zh
    en = policy.acknowledgement("en-GB", name=None, reference="BJ001-20261122-0001", kind="suggestion",
                                first_response_due=due, branch_code="BJ001")
    assert en.startswith("Dear customer,") and "suggestion" in en and "2026-11-22 16:05" in en
    fallback = policy.acknowledgement("fr", name="Anne", reference="R", kind="praise",
                                      first_response_due=due, branch_code="SH001")
    assert fallback.startswith("Anne，您好！") and "表扬" in fallback


# --- validation -------------------------------------------------------------------------------

def mutate(doc, change):
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


BAD_POLICIES = [
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
    ("unknown category in keywords", lambda d: d["keywords"].update(nails={"zh": ["美甲"]}), "keywords.nails"),
    ("category missing", lambda d: d["categories"].pop("price"), "categories.price: missing"),
    ("deadline not a duration", lambda d: d["deadlines"]["first_response"].update(general="24 hours"),
     "deadlines.first_response.general"),
    ("deadline zero", lambda d: d["deadlines"]["resolution"].update(low="PT0H"), "not a positive duration"),
    ("unknown flag", lambda d: d["triage"]["urgent_flags"].append("sunburn"),
     "unknown severity flag 'sunburn'"),
    ("never open", lambda d: d["branches"]["SH002"].update(opening_hours=dict.fromkeys(
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"])), "the branch is never open"),
    ("negative authority", lambda d: d["authority"].update(front_desk=-5), "authority.front_desk"),
    ("bad visit delay", lambda d: d["visit_delays"].update(skincare="a week"), "visit_delays.skincare"),
    ("unknown placeholder", lambda d: d["acknowledgement"]["en"].update(text="Hi {customer}"),
     "unknown placeholder {customer}"),
    ("unknown top-level key", lambda d: d.update(colour="pink"), "policy.colour"),
]


@pytest.mark.parametrize("label, change, expected", BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES])
def test_each_problem_is_named(tmp_path, default_doc, label, change, expected):
    path = write_policy(tmp_path, mutate(default_doc, change))
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems
    assert expected in str(raised.value)
    assert check_policy(path) == raised.value.problems


def test_every_problem_is_reported_at_once(tmp_path, default_doc):
    labels = {"unknown branch key", "bad time zone", "hour 25", "weekday missing", "region missing",
              "unknown category in keywords", "deadline zero", "unknown placeholder"}
    chosen = [b for b in BAD_POLICIES if b[0] in labels]
    doc = default_doc
    for _, change, _ in chosen:
        doc = mutate(doc, change)
    problems = check_policy(write_policy(tmp_path, doc))
    assert len(problems) == len(chosen), problems
    for _, _, expected in chosen:
        assert any(expected in p for p in problems), (expected, problems)


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
