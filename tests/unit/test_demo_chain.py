"""`closeloop demo`'s chain without servers: what it would post is what intake accepts, its texts
classify as the category they are written for, a seed plays one chain, and what stops it is one
line with exit status 2."""
from collections import Counter
from datetime import date

import pytest

from demo import texts
from demo.api import DemoError
from demo.chain import Chain
from services.intake.schemas import ComplaintIn, SaleIn
from shared import cli
from shared.calendar.clock import write_demo_offset
from shared.calendar.policy import load_policy
from shared.testing.fixtures import free_port

DAY = date(2026, 11, 10)  # a Tuesday


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def test_every_complaint_text_classifies_as_the_category_it_is_written_for(policy):
    rules = policy.sections["intake"]
    assert {t.category for t in texts.COMPLAINTS} == set(rules.categories)
    for template in texts.COMPLAINTS:
        assert rules.classify(template.text) == template.category, template.text
        urgent = rules.priority("complaint", template.category, template.flags, template.text) == "urgent"
        assert urgent == (template.category == "safety"), template.text
        assert rules.priority("complaint", template.category, (), template.text + texts.MEDIA_THREAT) == "urgent"


def test_a_seed_plays_one_chain_of_the_policy_s_first_branches(policy):
    first, again = Chain(policy, 2, 11, DAY), Chain(policy, 2, 11, DAY)
    assert [b.code for b in first.branches] == ["SH001", "SH002"]
    days = [first.traffic(n, date.fromordinal(DAY.toordinal() + n)) for n in range(3)]
    assert [(p.at, p.kind, p.body["customer"]) for p in days[0]] == \
        [(p.at, p.kind, p.body["customer"]) for p in again.traffic(0, DAY)]
    posts = [p for day in days for p in day]
    assert {p.branch for p in posts} == {"SH001", "SH002"}
    for post in posts:  # within the branch's opening hours
        local = post.at.astimezone(first.staff[post.branch].branch.zone)
        assert 10 <= local.hour < 22, post
    complaints = [p for p in days[0] + days[1] if p.kind == "complaint"]  # every category in the first two days
    assert {p.plan.template.category for p in complaints} == set(policy.sections["intake"].categories)
    assert {p.body["category"] is None for p in complaints} == {True, False}  # some left to intake
    assert {"suggestion", "praise"} <= Counter(p.kind for p in posts).keys()


def test_what_the_chain_posts_is_what_intake_accepts(policy):
    chain = Chain(policy, 3, 5, DAY)
    posts = [p for n in range(7) for p in chain.traffic(n, date.fromordinal(DAY.toordinal() + n))]
    for post in posts:
        schema = SaleIn() if post.kind == "sale" else ComplaintIn()
        assert schema.validate(post.body) == {}, post.body
    items = [item for p in posts if p.kind == "sale" for item in p.body["items"]]
    assert {i["product_type"] for i in items} == set(policy.product_types)  # every type a sale may name
    dyes = [i for i in items if i["product_type"] == "hair_colour"]
    assert dyes and all(i["technician_id"] and i["batch"] for i in dyes)
    consent = {p.body["customer"]["contact_consent"] for p in posts if p.kind == "sale"}
    assert consent == {True, False}
    cluster = [p for p in posts if p.allergy_cluster]  # one dye batch at two branches
    assert {p.branch for p in cluster} == {"SH001", "SH002"}
    assert {p.body["items"][0]["batch"] for p in cluster} == {chain.allergy_batch}


def test_more_branches_than_the_policy_has_is_refused(policy):
    with pytest.raises(DemoError, match="the policy has 4 branches"):
        Chain(policy, 5, 11, DAY)


def test_a_service_not_reachable_is_one_line_naming_it(tmp_path, capsys):
    clock = tmp_path / "clock"
    code = cli.main(["demo", "--clock-file", str(clock), "--days", "2"])
    assert code == 2 and "no demo clock at" in capsys.readouterr().err
    write_demo_offset(clock, -3 * 86400)
    nowhere = f"http://127.0.0.1:{free_port()}"
    code = cli.main(["demo", "--clock-file", str(clock), "--days", "2", "--intake-url", nowhere])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"closeloop demo: intake is not reachable at {nowhere}/health/ready")
    code = cli.main(["demo", "--clock-file", str(clock), "--branches", "9", "--days", "2"])
    assert code == 2 and "--branches 9: the policy has 4 branches" in capsys.readouterr().err
