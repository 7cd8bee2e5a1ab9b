"""`closeloop demo` end to end (issue 11): intake, investigation and aftercare in the test process
on a demo clock file, with their relays and senders; the demo plays two branches for three days
through their HTTP APIs, and the clock ends at real time. What it leaves is read back from the
services' APIs: complaints of every category, cases worked to resolution and some past their
deadline, visits completed, and an allergy cluster on one dye batch at both branches."""
from collections import defaultdict

import pytest

from demo.clock import rewind
from shared import cli
from shared.calendar.clock import read_demo_offset
from shared.testing.fixtures import jsonbody
from shared.testing.samples import edited_policy

pytestmark = pytest.mark.e2e
SERVICES = ("intake", "investigation", "aftercare")
CATEGORIES = {"service_quality", "product_quality", "hygiene_environment", "booking", "price", "staff_attitude",
              "after_sales", "safety"}


@pytest.fixture
def demo_chain(tmp_path, start_service, start_relay, start_sender, database_factory):
    """The three services on a demo clock set back before they start, as `closeloop dev
    --demo-clock` does; the bundled policy without its holidays, so that the last three days
    are open ones whenever the test runs."""
    from services.intake.service import IntakeService

    clock_file = tmp_path / "demo-clock"
    rewind(str(clock_file), 3)
    policy = edited_policy(tmp_path, "policy-open-every-day.yaml", lambda doc: doc["calendar"].update(holidays=[]))
    databases = {name: database_factory(name) for name in SERVICES}
    services = {name: start_service(name, database_url=url, DEMO_CLOCK_FILE=str(clock_file), POLICY_FILE=policy)
                for name, url in databases.items()}
    for url in databases.values():
        start_relay(url)
    start_sender(databases["investigation"], service="investigation")
    start_sender(databases["aftercare"], service="aftercare")
    start_sender(databases["intake"], service="intake", on_outcome=IntakeService.message_outcome)
    return services, clock_file, policy


def everything(http, service, path, token, **query) -> list[dict]:
    headers, params, items = {"Authorization": f"Bearer {token}"}, {**query, "limit": 200}, []
    while True:
        page = jsonbody(http.get(service.url(path), params=params, headers=headers, timeout=10))
        items += page["items"]
        if not page.get("next_cursor"):
            return items
        params["cursor"] = page["next_cursor"]


def test_the_demo_plays_two_branches_for_three_days_and_ends_at_real_time(demo_chain, http, token, capsys):
    services, clock_file, policy = demo_chain
    urls = [arg for name in SERVICES for arg in (f"--{name}-url", services[name].base_url)]
    code = cli.main(["demo", "--branches", "2", "--days", "3", "--clock-file", str(clock_file), "--policy", policy,
                     *urls])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "day 3/3" in err and "adverse reactions 2" in out
    assert read_demo_offset(clock_file) == 0  # back at real time
    hq = token("hq_admin", branch="*")

    complaints = everything(http, services["intake"], "/v1/complaints", hq, kind="complaint")
    assert {c["category"] for c in complaints} == CATEGORIES
    assert {c["branch_code"] for c in complaints} == {"SH001", "SH002"}
    assert {c["category_source"] for c in complaints} == {"manual", "automatic"}
    assert {"suggestion", "praise"} <= {c["kind"] for c in everything(http, services["intake"], "/v1/complaints", hq)}

    cases = everything(http, services["investigation"], "/v1/cases", hq)
    assert [c for c in cases if c["state"] in ("resolved", "closed") and c["kind"] == "complaint"]
    assert [c for c in cases if any(clock["breach_level"] >= 1 for clock in c["sla"].values())]  # some late
    assert [c for c in cases if c["escalation_level"] >= 1]
    approved = [r for c in cases for r in c["remedies"] if r["decided_by"] == "RM-east"]
    assert approved and approved[0]["amount"] > 2000  # above a store manager's authority

    completed = everything(http, services["aftercare"], "/v1/visits", hq, status="completed")
    assert completed and {v["branch_code"] for v in completed} == {"SH001", "SH002"}

    adverse = defaultdict(set)
    for case in cases:
        origin = case["origin"] or {}
        if origin.get("type") == "adverse_reaction":
            assert case["priority"] == "urgent"
            adverse[origin["product"]["batch"]].add(case["branch_code"])
    assert list(adverse.values()) == [{"SH001", "SH002"}]  # one batch, two branches
