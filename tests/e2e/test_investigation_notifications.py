"""Investigation's `GET /v1/notifications` (for the staff console's notification list): the staff
notices a case queues (SLA warnings, escalations, approvals waiting), addressed to the caller's
role in the caller's scope, newest first, keyset-paginated; a bad query names each field."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import requests

from shared.testing.fixtures import purge_queues_of, wait_until
from tests.e2e.test_console import complaint_at, publish

pytestmark = pytest.mark.e2e
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # the sample complaints' received time


def notices(investigation, token, **params) -> requests.Response:
    return requests.get(f"{investigation.base_url}/v1/notifications", params=params,
                        headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)


def opened_cases(investigation, amqp_uri, token, *branches) -> list[dict]:
    """A general complaint published for each branch (references with HTML), each case open."""
    hq = {"Authorization": f"Bearer {token('hq_admin', branch='*')}"}
    events = []
    for number, branch in enumerate(branches, 1):
        region = "north" if branch == "BJ001" else "east"
        event = complaint_at(branch, f"{branch}-20261122-<b>{number:04d}</b>", region)
        publish(amqp_uri, event)
        events.append(event)
    for event in events:
        url = f"{investigation.base_url}/v1/cases/{event['correlation_id']}"
        wait_until(lambda: requests.get(url, headers=hq, timeout=5).status_code == 200, "the case to open")
    return events


@pytest.fixture
def warned(start_service, amqp_uri, clock, token):
    """Investigation with a case at SH001, SH002 and BJ001, the clock past 80% of their first
    response (24 h): each branch's store manager has a warning."""
    clock.set(NOW)
    purge_queues_of(amqp_uri, "investigation")  # not this test's: complaints other tests left there
    investigation = start_service("investigation", clock=clock)
    events = opened_cases(investigation, amqp_uri, token, "SH001", "SH002", "BJ001")
    clock.advance(hours=20)
    hq = token("store_manager", branch="*")
    wait_until(lambda: len(notices(investigation, hq).json()["items"]) == 3, "the three warnings")
    return investigation, {e["branch_code"]: e["correlation_id"] for e in events}


def test_notices_reach_the_role_they_are_addressed_to_in_its_scope_newest_first_page_by_page(warned, token, clock):
    investigation, cases = warned
    mine = notices(investigation, token("store_manager", branch="SH001"))
    assert mine.status_code == 200, mine.text
    [notice] = mine.json()["items"]
    assert notice["case_id"] == cases["SH001"] and notice["kind"] == "sla_warning"
    assert notice["reference"] == "SH001-20261122-<b>0001</b>" and notice["branch_code"] == "SH001"
    assert notice["addressed_to"] == {"role": "store_manager", "branch": "SH001", "region": None}
    assert "80% of the time is gone" in notice["text"] and datetime.fromisoformat(notice["created_at"])
    assert mine.json()["next_cursor"] is None

    # Another role of the branch, another branch's manager: not theirs.
    assert notices(investigation, token("investigator", branch="SH001")).json()["items"] == []
    assert [n["case_id"] for n in notices(investigation, token("store_manager", branch="BJ001")).json()["items"]] \
        == [cases["BJ001"]]
    east = notices(investigation, token("store_manager", region="east")).json()["items"]
    assert sorted(n["branch_code"] for n in east) == ["SH001", "SH002"]

    # The deadline passes: each region's regional manager hears of its own branches' cases.
    clock.advance(hours=5)
    rita = token("regional_manager", region="east")
    wait_until(lambda: len(notices(investigation, rita).json()["items"]) == 2, "the escalations to the region")
    first = notices(investigation, rita, limit=1).json()
    assert first["items"][0]["kind"] == "escalated" and first["next_cursor"]
    assert first["items"][0]["addressed_to"] == {"role": "regional_manager", "branch": None, "region": "east"}
    second = notices(investigation, rita, limit=1, cursor=first["next_cursor"]).json()
    assert int(second["items"][0]["id"]) < int(first["items"][0]["id"])  # newest first
    assert {first["items"][0]["case_id"], second["items"][0]["case_id"]} == {cases["SH001"], cases["SH002"]}
    assert second["next_cursor"] is None
    north = notices(investigation, token("regional_manager", region="north")).json()["items"]
    assert [(n["case_id"], n["addressed_to"]["region"]) for n in north] == [(cases["BJ001"], "north")]
    assert notices(investigation, token("hq_admin", branch="*")).json()["items"] == []  # not yet HQ's


def test_the_query_is_checked_and_a_token_is_needed(warned, token):
    investigation, _ = warned
    assert notices(investigation, None).status_code == 401
    bad = notices(investigation, token("store_manager", branch="SH001"), limit=0, cursor="x", colour="red")
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"limit", "colour"}  # the cursor once the rest is right
    wrong = notices(investigation, token("store_manager", branch="SH001"), cursor="bm90IGEgY3Vyc29y")
    assert wrong.status_code == 400 and set(wrong.json()["error"]["fields"]) == {"cursor"}
    documented = requests.get(f"{investigation.base_url}/openapi.json", timeout=5).json()
    assert "/v1/notifications" in documented["paths"]
