"""The console's parts that need no servers: its catalog covers every message, htmx is the file
VENDORED.md names, dates read as the issue says, the guessing figures, templates escape data."""
import hashlib
import re
from datetime import datetime, timedelta, timezone

from services.console import catalog, rendering
from services.console.policy import RULES, STAFF_ROLES
from services.console.repository import StaffMember
from services.console.schemas import password_problem

STATIC = rendering.HERE / "static"


def test_every_message_the_console_uses_is_translated_into_chinese():
    missing = catalog.untranslated("zh")
    assert missing == {}, f"add these to translations/zh/LC_MESSAGES/console.po: {missing}"
    assert rendering.gettext("zh", "My work") == "我的工作"
    assert rendering.gettext("en", "My work") == "My work"


def test_the_vendored_htmx_is_the_pinned_release_the_base_template_loads():
    notes = (STATIC / "vendor" / "VENDORED.md").read_text()
    digest = re.search(r"sha256 of `htmx-2\.0\.11\.min\.js`: `([0-9a-f]{64})`", notes).group(1)
    body = (STATIC / "vendor" / "htmx-2.0.11.min.js").read_bytes()
    assert hashlib.sha256(body).hexdigest() == digest
    assert b'version:"2.0.11"' in body and "0BSD" in notes
    assert '/static/vendor/htmx-2.0.11.min.js' in (rendering.TEMPLATES / "base.html").read_text()


def test_times_show_in_the_branch_zone_chinese_and_iso_like():
    instant = datetime(2026, 11, 23, 6, 5, tzinfo=timezone.utc)
    assert rendering.format_instant(instant, "Asia/Shanghai", "zh") == "2026年11月23日 14:05"
    assert rendering.format_instant("2026-11-23T06:05:00Z", "Asia/Shanghai", "en") == "2026-11-23 14:05"
    assert rendering.format_instant(None, "Asia/Shanghai", "zh") == ""
    assert rendering.format_remaining(2 * 3600 + 5 * 60 + 30, "zh") == "剩余 2小时5分"
    assert rendering.format_remaining(-(26 * 3600 + 60), "en") == "overdue 1d 2h 1m"


def test_guessing_is_slowed_after_three_failures_and_locked_at_ten():
    throttle = RULES.throttle
    assert [throttle.wait_after(n).total_seconds() for n in range(0, 7)] == [0, 0, 0, 2, 4, 8, 16]
    assert throttle.wait_after(10) == throttle.lock_for == timedelta(minutes=15)
    assert RULES.tokens.ttl == timedelta(minutes=5) and RULES.sessions.idle == timedelta(minutes=30)


def test_staff_roles_are_the_design_s_people_and_passwords_have_a_floor():
    assert "branch_integration" not in STAFF_ROLES and {"store_manager", "hq_admin", "auditor"} <= set(STAFF_ROLES)
    assert password_problem("short") and password_problem(" " * 12) and password_problem("x" * 300)
    assert password_problem("long-enough-1") is None


def test_templates_escape_what_they_show_and_gettext_never_takes_data():
    member = StaffMember(id="1", login="amy", display_name='<script>alert("x")</script>', role="store_manager",
                         scope_kind="branch", scope_value="SH001", active=True, password_hash="")
    task = {"case_id": "c", "reference": "<img src=x onerror=alert(1)>", "title": "<b>Assign</b>", "name": "assign",
            "priority": "urgent", "branch_code": "SH001", "paused": False, "state": "ok", "due_iso": "", "due": "",
            "remaining": ""}
    tabs = [{"deadline": "soon", "label": "<i>soon</i>", "n": 1, "url": "/?deadline=soon", "current": True}]
    page = rendering.render("my_work.html", "zh", staff=member, csrf_token="t", tasks=[task], problem=None,
                            now_iso="", tabs=tabs, filters={"deadline": "soon", "branch": None, "priority": None},
                            filtered=True, older=False, view_url="/?deadline=soon", branches=["SH001"],
                            priorities=["urgent"], more="/?cursor=x")
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<img" not in page and "<b>Assign" not in page and "<i>soon" not in page
    assert "店长" in page and "Content" not in page
    for template in rendering.TEMPLATES.glob("*.html"):  # `_(variable)` would trust the variable as markup
        for call in re.findall(r"_\(([^)\"]*)\)", template.read_text()):
            assert call.strip() in {"notice", "message", "problem"}, (template.name, call)


def test_an_alert_with_more_cases_than_listed_says_how_many_more_and_labels_are_translated_once():
    from services.console import overview
    from shared.calendar.policy import load_policy

    policy, now = load_policy(), datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(50)]
    answer = {"kind": "recurring_problem", "by": "technician", "about": {"technician_id": "T-1"}, "count": 60,
              "records": ids, "records_more": True, "branches": ["SH001"], "first_at": "2026-11-20T02:00:00Z",
              "last_at": "2026-11-21T02:00:00Z", "open": True, "open_until": "2026-12-05T02:00:00Z"}
    late = {"branch_code": "SH001", "cases": 2, "first_response": 1, "resolution": 1, "worst": [
        {"case_id": ids[0], "reference": "<b>R1</b>", "priority": "urgent", "due": "2026-11-21T02:00:00Z",
         "clock": "first_response"},
        {"case_id": ids[1], "reference": "R2", "priority": "odd<i>", "due": "2026-11-21T03:00:00Z", "clock": "x"}]}
    for language, more, case_10, urgent in (("zh", "还有 50 起", "案件 10", "紧急"), ("en", "and 50 more", "Case 10",
                                                                                  "Urgent")):
        labels = overview._labels(language)
        alert = overview._alert(answer, policy, language)
        assert (alert["cases"], alert["more"]) == (ids[:10], 50)
        few = {**answer, "records": ids[:10], "records_more": False, "count": 10}
        assert overview._alert(few, policy, language)["more"] == 0
        branch = overview._late_branch(late, policy, now, language, labels)
        page = rendering.render("_alerts.html", language, alerts=[alert], breaching=[branch], problem=None,
                                now_iso=now.isoformat(), safety=0, late_cases=2, case_label=labels["case_label"],
                                more_label=labels["more_label"])
        assert page.count('href="/cases/') == 12 and f">{case_10}</a>" in page and more in page
        assert "&lt;b&gt;R1&lt;/b&gt;" in page and f"· {urgent}" in page and "odd&lt;i&gt;" in page
