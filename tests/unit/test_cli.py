"""The operator's command line: tokens printed alone, every scope form, policy check."""
import json
import logging

import pytest
import yaml

from shared.security import auth
from shared import cli
from shared.observability import logs
from shared.calendar.policy import DEFAULT_POLICY_PATH, load_policy


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOSELOOP_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("CLOSELOOP_JWT_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("CLOSELOOP_JWT_PUBLIC_KEY", raising=False)
    return tmp_path / "keys"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("scope, branches", [
    (["--branch", "SH001"], {"SH001"}),
    (["--region", "east"], {"SH001", "SH002"}),
    (["--branch", "*"], None),
])
def test_token_issue_prints_the_token_alone_for_every_scope_form(capsys, keys, scope, branches):
    code, out, err = run(capsys, "token", "issue", "--role", "store_manager", *scope, "--ttl", "12h")
    assert code == 0 and err == ""
    assert out.count("\n") == 1 and out.strip().count(".") == 2  # one line: the JWT
    assert (keys / "jwt-private.pem").exists()  # the development pair, made on first use
    verifier = auth.TokenVerifier((keys / "jwt-public.pem").read_bytes(), load_policy())
    identity = verifier.identity(out.strip())
    assert identity.role == "store_manager"
    assert identity.branches == (None if branches is None else frozenset(branches))


def test_token_issue_refuses_what_it_cannot_sign(capsys, keys):
    assert run(capsys, "token", "issue", "--role", "front_desk", "--region", "mars")[0] == 2
    assert run(capsys, "token", "issue", "--role", "front_desk", "--branch", "SH001", "--ttl", "soon")[0] == 2
    with pytest.raises(SystemExit):
        cli.main(["token", "issue", "--role", "front_desk"])  # no scope
    with pytest.raises(SystemExit):
        cli.main(["token", "issue", "--role", "wizard", "--branch", "SH001"])


def test_the_dashboard_form_prints_a_url_with_the_token_in_the_fragment(capsys, keys):
    code, out, _ = run(capsys, "token", "issue", "--role", "hq_analyst", "--branch", "*", "--dashboard")
    assert code == 0
    assert "/dashboard#token=" in out and out.strip().split("#token=")[1].count(".") == 2


def default_doc() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))


def test_policy_check_passes_the_default_file_and_lists_every_problem_of_a_bad_one(capsys, tmp_path):
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0 and out.strip().endswith(": ok")
    doc = default_doc()
    doc["branches"]["SH001"].update(timezone="Mars/Olympus", opening_hours="25:00-22:00")
    del doc["branches"]["SH001"]["region"]
    doc["intake"]["deadlines"]["first_response"]["urgent"] = "soon"
    doc["aftercare"]["visit_delays"]["nails"] = 3
    bad = tmp_path / "policy.yaml"
    bad.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code, _, err = run(capsys, "policy", "check", str(bad))
    assert code == 1
    assert "5 problem(s)" in err
    assert "Mars/Olympus" in err and "25:00" in err and "branches.SH001.region: missing" in err
    # A section's problems come with their place in the file.
    assert "intake.deadlines.first_response.urgent" in err and "aftercare.visit_delays.nails" in err


def test_policy_check_tells_how_to_move_a_version_1_file(capsys, tmp_path):
    doc = default_doc()
    for section in ("intake", "investigation", "aftercare"):
        doc.update(doc.pop(section))
    doc["version"] = 1
    old = tmp_path / "policy.yaml"
    old.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code, _, err = run(capsys, "policy", "check", str(old))
    assert code == 1
    assert "version: must be 2" in err and "move them under intake:, investigation: and aftercare:" in err


def test_token_issue_reads_the_policy_file_it_is_given(capsys, keys, tmp_path, monkeypatch):
    doc = default_doc()
    doc["branches"]["CD001"] = {"name": "成都店", "region": "west", "opening_hours": "10:00-22:00"}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("CLOSELOOP_POLICY_FILE", str(path))
    code, out, _ = run(capsys, "token", "issue", "--role", "regional_manager", "--region", "west")
    assert code == 0
    identity = auth.TokenVerifier((keys / "jwt-public.pem").read_bytes(), load_policy(path)).identity(out.strip())
    assert identity.branches == frozenset({"CD001"})


def test_logs_are_json_lines_with_the_correlation_id():
    record = logging.LogRecord("closeloop.test", logging.INFO, __file__, 1, "accepted %s", ("x",), None)
    record.reference = "SH001-20261122-0001"
    token = logs.correlation_id.set("req-42")
    try:
        line = json.loads(logs.JsonFormatter("intake").format(record))
    finally:
        logs.correlation_id.reset(token)
    assert line["message"] == "accepted x" and line["service"] == "intake" and line["level"] == "info"
    assert line["correlation_id"] == "req-42" and line["reference"] == "SH001-20261122-0001"


def test_bus_users_skips_services_without_a_password_and_never_prints_one(monkeypatch, capsys):
    from shared import cli
    from shared.messaging import broker_admin

    made = {}
    monkeypatch.setattr(broker_admin.BrokerAdmin, "ensure_user",
                        lambda self, name, password, **perms: made.setdefault(name, (password, perms)))
    monkeypatch.setenv("CLOSELOOP_BUS_PASSWORD_INTAKE", "s3cret-intake")
    for service in ("INVESTIGATION", "AFTERCARE", "REPORTING"):
        monkeypatch.delenv(f"CLOSELOOP_BUS_PASSWORD_{service}", raising=False)
        monkeypatch.delenv(f"CLOSELOOP_BUS_PASSWORD_{service}_FILE", raising=False)
    assert cli.main(["bus", "users"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "closeloop-investigation: skipped" in out
    password, perms = made["closeloop-intake"]
    assert password == "s3cret-intake"
    # intake binds its RPC queue by intake.* and reply uuids only, and investigation's events by type
    assert perms["topics"]["nameko-rpc"][1] == r"^(intake\.\*|" + "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
    assert "case_opened" in perms["topics"]["investigation.events"][1]
    assert "reporting.events" not in perms["topics"] and "reporting" not in perms["read"]


def test_replay_knows_a_message_parked_longer_ago_than_the_inbox_keeps_events():
    """Its twin, if one was handled, has no inbox row any more: the replay warns."""
    from datetime import datetime, timedelta, timezone

    from shared.messaging.dead_letters import Parked

    def parked(age: timedelta, failed_at=None) -> Parked:
        when = failed_at if failed_at is not None else (datetime.now(timezone.utc) - age).isoformat()
        return Parked("q.dlq", "e1", "complaint_registered", "failed", "boom", 3, when, "{}")

    month = timedelta(days=30)
    assert cli._parked_before(parked(timedelta(days=31)), month)
    assert not cli._parked_before(parked(timedelta(days=29)), month)
    assert not cli._parked_before(parked(month, failed_at=""), month)  # no header: nothing to say


def test_a_database_url_that_is_no_database_url_is_a_line_not_a_traceback(capsys, monkeypatch):
    monkeypatch.setenv("INTAKE_DATABASE_URL", "nonsense://x")
    code, out, err = run(capsys, "retention", "run", "--service", "intake")
    assert code == 2 and out == ""
    assert err.strip() == ("closeloop: cannot run the retention of intake: DATABASE_URL is not a PostgreSQL URL "
                           "(Can't load plugin: sqlalchemy.dialects:nonsense)")
