"""The operator's command line: tokens printed alone, every scope form, policy check."""
import json
import logging

import pytest

from shared.security import auth
from shared import cli
from shared.observability import logs
from shared.calendar.policy import load_policy


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


def test_policy_check_passes_the_default_file_and_lists_every_problem_of_a_bad_one(capsys, tmp_path):
    assert run(capsys, "policy", "check")[0] == 0
    bad = tmp_path / "policy.yaml"
    bad.write_text("branches:\n  SH001:\n    name: x\n    timezone: Mars/Olympus\n    opening_hours: '25:00-22:00'\n")
    code, _, err = run(capsys, "policy", "check", str(bad))
    assert code == 1
    assert "Mars/Olympus" in err and "25:00" in err and "region" in err


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
