"""The console's overview pages (issue 12, HQ's and everyone's part) against real services:
`/alerts` from reporting (seeded through its own handlers: a product safety signal across two
branches, a recurring problem at SH002, cases breaching their SLA at SH001 and SH002) with the
dashboard's link, whose token is the staff member's own; `/notifications` from investigation
(the notices its cases address to a role in a scope). An HQ analyst sees the chain, a store
manager its branch, a front desk the 403 page; HTML in every field shown is inert."""
from __future__ import annotations

import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from html import unescape

import jwt
import pytest

from services.console.policy import RULES
from services.reporting import handlers
from services.reporting.policy import ReportingRules
from services.reporting.repository import ReportingStore
from shared.calendar.policy import load_policy
from shared.persistence import db
from shared.security import auth
from shared.testing.fixtures import purge_queues_of, wait_until
from tests.e2e import test_console
from tests.e2e.test_dashboard import Events
from tests.e2e.test_investigation_notifications import notices, opened_cases
from tests.e2e.test_reporting import purge_reporting_queues

pytestmark = pytest.mark.e2e
console = test_console.console
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
BATCH = 'B<img src=x onerror=alert(1)>'
DASHBOARD = "http://gateway.example:8080"


def complaint(events: Events, branch: str, reference: str, received: datetime, category: str) -> str:
    """A complaint reporting hears of (registered, its case opened), never answered."""
    case = str(uuid.uuid4())
    first_due, resolution_due = received + timedelta(hours=24), received + timedelta(days=7)
    common = dict(kind="complaint", category=category, priority="general", received_at=received.isoformat(),
                  first_response_due=first_due.isoformat(), resolution_due=resolution_due.isoformat())
    events.add("intake", "complaint_registered", branch, case, received, complaint_id=case, reference=reference,
               channel="front_desk", severity_flags=[], region="east", customer_ref=f"c-{case[:8]}", service=None,
               products=[], **common)
    events.add("investigation", "case_opened", branch, case, received + timedelta(minutes=1), case_id=case, **common)
    return case


@pytest.fixture
def reporting(start_service, database_factory, amqp_uri, clock):
    """Reporting on a database seeded through its own handlers."""
    clock.set(NOW)
    purge_reporting_queues(amqp_uri)  # what other tests left for reporting is not this chain's
    events, rng = Events(), random.Random(12)
    late = {"mine": complaint(events, "SH001", "SH001-20261121-<b>0001</b>", NOW - timedelta(hours=30), "booking"),
            "theirs": [complaint(events, "SH002", f"SH002-2026112{day}-000{day}", NOW - timedelta(days=6 - day),
                                 "hygiene_environment") for day in (1, 2, 3)]}  # a recurring problem at SH002
    for branch, days_ago in (("SH001", 9), ("BJ001", 5)):  # a safety signal: one batch, two branches
        sold = NOW - timedelta(days=days_ago)
        events.sale(rng, branch, sold, batch=BATCH, outcome="completed", reaction_at=sold + timedelta(days=1))
    url = database_factory("reporting")
    store = ReportingStore(db.make_engine(url, 2))
    handlers.ingest(store, events=events.all, rules=ReportingRules(), now=NOW)
    store.engine.dispose()
    return start_service("reporting", clock=clock, database_url=url), late


def test_hq_sees_the_chain_s_alerts_and_breaching_cases_and_a_dashboard_link_of_its_own(reporting, console):
    service, late = reporting
    c = console(REPORTING_URL=service.base_url, DASHBOARD_URL=DASHBOARD)
    c.add("hana", role="hq_analyst", branch="*", name="<i>华</i> 分析")
    hq = c.browser()
    assert hq.sign_in("hana").status_code == 303
    page = hq.get("/alerts")
    assert page.status_code == 200, page.text[:1000]
    text = page.text
    assert "产品安全信号" in text and "批次 B&lt;img src=x onerror=alert(1)&gt;" in text and "<img src=x" not in text
    assert "不良反应 2 例" in text and "BJ001, SH001" in text and "重复问题" in text and "SH002 · 环境卫生" in text
    assert "投诉 3 起" in text and "持续至 " in text and "2026年11月" in text
    assert "&lt;i&gt;华&lt;/i&gt; 分析" in text and "<i>华" not in text
    # Breaching now, by branch: each case linked to its page, its reference inert.
    assert f'href="/cases/{late["mine"]}">SH001-20261121-&lt;b&gt;0001&lt;/b&gt;</a>' in text
    assert all(f'href="/cases/{case}"' in text for case in late["theirs"])
    assert 'data-branch="SH001"' in text and 'data-branch="SH002"' in text
    assert "首次响应 · <time" in text and "已超时 6小时0分" in text and "2026年11月22日 04:00" in text  # 20:00Z+8
    assert 'hx-trigger="every 60s"' in text

    # The dashboard's link: reporting's page through DASHBOARD_URL, the token in the fragment,
    # signed with the console's key, the staff member's role and scope, 30 minutes.
    link = unescape(re.search(r'id="dashboard-link" class="button" href="([^"]+)"', text).group(1))
    assert link.startswith(f"{DASHBOARD}/dashboard#token=") and 'rel="noopener noreferrer"' in text
    token = link.split("#token=", 1)[1]
    claims = jwt.decode(token, auth.load_public_key(), algorithms=[auth.ALGORITHM], issuer=auth.ISSUER)
    assert claims["sub"] == "hana" and claims["role"] == "hq_analyst" and claims["scope"] == {"all": True}
    assert claims["exp"] - claims["iat"] == RULES.tokens.dashboard_ttl.total_seconds() == 30 * 60
    assert abs(claims["iat"] - time.time()) < 60
    identity = auth.TokenVerifier(auth.load_public_key(), load_policy()).identity(token)
    assert identity.role == "hq_analyst" and identity.branches is None
    assert "30 分钟内有效" in text

    # The refresh: the lists alone, and no new token every minute.
    poll = hq.get("/alerts", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and "<html" not in poll.text and "dashboard#token" not in poll.text
    assert f'href="/cases/{late["mine"]}"' in poll.text

    # In English: the same, dates ISO-like.
    assert hq.post("/language", {"language": "en", "csrf_token": hq.csrf("/alerts")}).status_code == 303
    english = hq.get("/alerts").text
    assert "Product safety signal" in english and "2026-11-22 04:00" in english and "Open the dashboard" in english


def test_a_store_manager_sees_its_branch_a_front_desk_is_refused_and_reporting_away_is_said(reporting, console):
    service, late = reporting
    c = console(REPORTING_URL=service.base_url)
    c.add("amy", role="store_manager", branch="SH001")
    amy = c.browser()
    assert amy.sign_in("amy").status_code == 303
    text = amy.get("/alerts").text
    assert f'href="/cases/{late["mine"]}"' in text and 'data-branch="SH002"' not in text
    assert not any(case in text for case in late["theirs"]) and "环境卫生" not in text  # SH002's problem
    assert "产品安全信号" in text and "不良反应 1 例" in text and "全连锁共 2 例" in text  # its own reaction
    link = unescape(re.search(r'id="dashboard-link" class="button" href="([^"]+)"', text).group(1))
    assert link.startswith(f"{service.base_url}/dashboard#token=")  # no DASHBOARD_URL: the REPORTING_URL
    claims = jwt.decode(link.split("#token=", 1)[1], auth.load_public_key(), algorithms=[auth.ALGORITHM],
                        issuer=auth.ISSUER)
    assert claims["role"] == "store_manager" and claims["scope"] == {"branch": "SH001"} and claims["sub"] == "amy"

    c.add("fay", role="front_desk", branch="SH001")
    desk = c.browser()
    desk.sign_in("fay")
    refused = desk.get("/alerts")
    assert refused.status_code == 403 and "您的角色不查看预警" in refused.text and "dashboard#token" not in refused.text

    away = console(REPORTING_URL=test_console.NOBODY)
    away.add("ada", role="hq_admin", branch="*")
    ada = away.browser()
    ada.sign_in("ada")
    down = ada.get("/alerts")
    assert down.status_code == 200 and "预警暂时无法显示" in down.text and "dashboard#token=" in down.text


def test_notifications_reach_the_role_they_are_addressed_to_and_not_another_branch(
        console, start_service, amqp_uri, clock, token):
    clock.set(NOW)
    purge_queues_of(amqp_uri, "investigation")  # not this test's: complaints other tests left there
    investigation = start_service("investigation", clock=clock)
    events = opened_cases(investigation, amqp_uri, token, "SH001", "SH002")
    mine, theirs = (e["correlation_id"] for e in events)
    c = console(INVESTIGATION_URL=investigation.base_url)
    c.add("amy", role="store_manager", branch="SH001")
    c.add("ivan", role="investigator", branch="SH001")
    assert c.staff("add", "rita", "--name", "Rita", "--role", "regional_manager", "--region", "east") == 0

    def signed_in(login: str):  # after each move of the clock: the sessions have idled out
        browser = c.browser()
        assert browser.sign_in(login).status_code == 303
        return browser

    empty = signed_in("amy").get("/notifications")
    assert empty.status_code == 200 and "没有给您的通知" in empty.text and 'hx-trigger="every 30s"' in empty.text

    clock.advance(hours=20)  # 80% of the first response: a warning to each branch's store manager
    any_manager = token("store_manager", branch="*")
    wait_until(lambda: len(notices(investigation, any_manager).json()["items"]) == 2, "the warnings")
    text = signed_in("amy").get("/notifications").text
    assert f'href="/cases/{mine}">SH001-20261122-&lt;b&gt;0001&lt;/b&gt;</a>' in text and "<b>0001" not in text
    assert "时限预警" in text and "80% of the time is gone" in text and theirs not in text
    assert re.search(r"SH001 · <time datetime=\"[^\"]+\">\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d</time>", text)
    assert "没有给您的通知" in signed_in("ivan").get("/notifications").text  # not the investigator's

    clock.advance(hours=5)  # the deadline: escalated to the east's regional manager, both cases
    wait_until(lambda: len(notices(investigation, token("regional_manager", region="east")).json()["items"]) == 2,
               "the escalations")
    rita = signed_in("rita")
    poll = rita.get("/notifications", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and "<html" not in poll.text
    assert poll.text.count("已升级给您") == 2 and f'href="/cases/{mine}"' in poll.text and \
        f'href="/cases/{theirs}"' in poll.text
    shown = [int(n) for n in re.findall(r'data-notice="(\d+)"', poll.text)]
    assert len(shown) == 2 and shown == sorted(shown, reverse=True)  # newest first
    assert "已升级给您" not in signed_in("amy").get("/notifications").text

    # Page by page: a cursor investigation gave; a made-up one is said, not a fault.
    assert rita.get("/notifications?cursor=bm90IGEgY3Vyc29y").status_code == 200
    assert "这一页通知已不可用" in rita.get("/notifications?cursor=bm90IGEgY3Vyc29y").text
