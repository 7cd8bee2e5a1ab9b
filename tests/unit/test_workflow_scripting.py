"""The restricted expression and script environment of process files (shared.workflow.scripting)."""
from datetime import datetime, timedelta, timezone

import pytest

from shared.calendar.clock import ManualClock
from shared.workflow.errors import DataRefused, ScriptRefused
from shared.workflow.scripting import RestrictedEnvironment, check_data, compiled, default_helpers, refusals


@pytest.fixture
def environment():
    return RestrictedEnvironment(default_helpers(ManualClock(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))))


@pytest.mark.parametrize("source, mode", [
    ('priority == "urgent"', "eval"),
    ("escalation_level + 1", "eval"),
    ("isoformat(now() + timedelta(hours=1))", "eval"),
    ("sorted(x['n'] for x in items if x['n'] > limit)", "eval"),
    ('f"{owner} at level {level}"', "eval"),
    ("total = 0\nfor x in items:\n    total += x['n']\nlate = total > 3", "exec"),
    ("try:\n    a = int(text)\nexcept ValueError:\n    a = 0", "exec"),
])
def test_plain_expressions_and_scripts_are_allowed(source, mode):
    assert refusals(source, mode) == []


@pytest.mark.parametrize("source, mode, said", [
    ("__import__('os').system('id')", "eval", "__import__"),
    ("import os", "exec", "'import'"),
    ("from os import path", "exec", "'import'"),
    ("().__class__.__bases__[0].__subclasses__()", "eval", ".__class__"),
    ("x._secret", "eval", "._secret"),
    ("(x for x in []).gi_frame.f_back.f_globals", "eval", ".gi_frame"),
    ("frame.f_back", "eval", ".f_back"),
    ("match x:\n    case str(__class__=c):\n        pass", "exec", ".__class__"),
    ("match x:\n    case str(format=f):\n        pass", "exec", ".format()"),
    ("open('/etc/passwd').read()", "eval", "open()"),
    ("eval('1')", "eval", "eval()"),
    ("exec('x = 1')", "exec", "exec()"),
    ("getattr(x, 'y')", "eval", "getattr()"),
    ("'{0.__class__}'.format(x)", "eval", ".format()"),
    ("def f():\n    return 1", "exec", "'def'"),
    ("class A:\n    pass", "exec", "'class'"),
    ("global x\nx = 1", "exec", "'global'"),
    ("__builtins__", "eval", "__builtins__"),
    ("1 +", "eval", "not valid Python"),
])
def test_imports_dunders_and_reflection_are_refused_with_the_construct_named(source, mode, said):
    assert any(said in found for found in refusals(source, mode))


def test_a_refusal_names_the_task_and_the_construct():
    with pytest.raises(ScriptRefused) as refused:
        compiled("__import__('os')", "eval", "task 'prepare'")
    assert str(refused.value).startswith("task 'prepare': the name __import__ is not allowed")
    assert refused.value.where == "task 'prepare'"


def test_expressions_run_with_only_the_safe_builtins_and_the_helpers(environment):
    assert environment.evaluate("len(items) + max(items)", {"items": [1, 5]}) == 7
    assert environment.evaluate("now() + timedelta(hours=1)", {}) == datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
    with pytest.raises(NameError):
        environment.evaluate("print('x')", {})  # no print, no file or console access
    with pytest.raises(ScriptRefused):
        environment.evaluate("__import__('os')", {})


def test_task_data_cannot_bring_its_own_builtins(environment):
    data = {"__builtins__": {"print": print}, "n": 1}
    with pytest.raises(NameError):
        environment.evaluate("print", data)


def test_scripts_write_task_data_and_leave_no_helpers_or_builtins_in_it(environment):
    data = {"level": 1}
    environment.execute("level = level + 1\ndue = isoformat(now() + timedelta(minutes=48))", data)
    assert data == {"level": 2, "due": "2026-11-22T02:48:00+00:00"}


def test_data_entering_a_process_is_a_json_object_with_plain_keys():
    helpers = default_helpers(ManualClock())
    check_data({"owner": "s-1", "amount": 5000}, helpers, "form")
    for bad, said in [([1], "must be an object"), ({"_x": 1}, "'_x'"), ({"now": 1}, "hide the process helper"),
                      ({"at": datetime.now(timezone.utc)}, "plain JSON"), ({"d": timedelta(1)}, "plain JSON")]:
        with pytest.raises(DataRefused, match=said):
            check_data(bad, helpers, "form")


@pytest.mark.parametrize("source", ["not " * 5000 + "x", "-" * 20000 + "1", "x" + ".a" * 5000])
def test_an_expression_nested_too_deeply_for_the_parser_is_refused_not_a_crash(source):
    assert refusals(source) == ["not valid Python (nested too deeply)"]
    with pytest.raises(ScriptRefused, match="nested too deeply"):
        compiled(source, "eval", "task 'route'")


def test_data_nested_too_deeply_or_with_text_postgresql_refuses_is_refused_before_it_reaches_the_process():
    helpers = default_helpers(ManualClock())

    def nested(levels, wrap=lambda value: {"a": value}):
        value = 1
        for _ in range(levels):
            value = wrap(value)
        return value

    check_data(nested(32), helpers, "payload")  # the object and 31 levels inside it
    for bad, said in [(nested(33), "nested more than 32 levels"), (nested(100_000), "nested more than 32 levels"),
                      ({"items": nested(32, wrap=lambda value: [value])}, "nested more than 32 levels"),
                      ({"name": "\ud800"}, "plain JSON")]:
        with pytest.raises(DataRefused, match=said):
            check_data(bad, helpers, "payload")


# Two ways a process script reached `os` before they were refused, neither with an Attribute
# node starting with '_': a generator's frame, its callers', their module's globals; and a match
# statement's class pattern, whose keywords are attributes read by name.
ESCAPES = {
    "frames": ("gens = []\n"
               "g = (gens[0].gi_frame.f_back.f_back.f_globals for _ in [1])\n"
               "gens.append(g)\n"
               "pid = next(g)['__builtins__']['__import__']('os').getpid()\n"),
    "match": ("O = str.mro()[1]\n"
              "match O:\n"
              "    case O(__subclasses__=subs):\n"
              "        pass\n"
              "for cls in subs():\n"
              "    match cls:\n"
              "        case O(__init__=O(__globals__=g)):\n"
              "            if isinstance(g, dict) and 'sys' in g:\n"
              "                pid = g['sys'].modules['os'].getpid()\n"),
}


@pytest.mark.parametrize("escape, refused", [
    ("frames", [".f_globals is not allowed (no frames, code or tracebacks)",
                ".f_back is not allowed (no frames, code or tracebacks)",
                ".gi_frame is not allowed (no frames, code or tracebacks)"]),
    ("match", [".__subclasses__ is not allowed (no attributes starting with '_')",
               ".__init__ is not allowed (no attributes starting with '_')",
               ".__globals__ is not allowed (no attributes starting with '_')"]),
])
def test_no_way_around_the_rules_reaches_the_engines_builtins(environment, escape, refused):
    assert refusals(ESCAPES[escape], "exec") == [f"the attribute {said}" for said in refused]
    data = {}
    with pytest.raises(ScriptRefused, match=refused[0].split(" ")[0]):
        environment.execute(ESCAPES[escape], data)
    assert "pid" not in data


def test_a_match_statement_on_data_is_allowed():
    assert refusals("match point:\n    case {'x': x, 'y': y}:\n        total = x + y", "exec") == []
