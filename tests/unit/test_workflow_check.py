"""`closeloop process check` and process definitions: what a changed .bpmn must pass before it
runs, and the content hash that versions it."""
from pathlib import Path

import pytest

from shared import cli
from shared.workflow import InvalidProcess, check_text, load_definition, parse_definition

FIXTURES = Path(__file__).resolve().parents[1] / "workflow_fixtures"
EXAMPLE = FIXTURES / "example_case.bpmn"
TEXT = EXAMPLE.read_text()


def variant(*replacements: tuple[str, str]) -> str:
    text = TEXT
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


def problems(text: str, **kwargs) -> list[str]:
    return check_text(text.encode(), "case.bpmn", **kwargs).problems


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_example_process_passes_with_its_tasks_and_operators(capsys):
    report = check_text(TEXT.encode(), required_tasks=("assign", "close"),
                        operators={"escalate", "notify_staff", "publish"})
    assert report.problems == [] and report.process_ids == ["example_case"]
    code, out, err = run(capsys, "process", "check", str(EXAMPLE), "--requires", "assign,close")
    assert (code, err) == (0, "") and out.strip().endswith("ok (process example_case)")


def test_the_command_lists_each_problem_on_its_own_line_and_exits_1(capsys, tmp_path):
    bad = tmp_path / "case.bpmn"
    bad.write_text(variant(("escalation_level = 0", "escalation_level = __import__('os').getpid()"),
                           ('>"PT1H"<', ">PT1H<")))
    code, out, err = run(capsys, "process", "check", str(bad), "--requires", "assign,respond",
                         "--operators", "escalate,publish")
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert lines[0] == f"{bad}: 4 problem(s)"
    assert lines[1:] == [
        "  - prepare (script): the name __import__ is not allowed (no names starting with '__')",
        '  - assign_overdue (timeDuration): PT1H is read as Python; quote it: "PT1H"',
        "  - service task 'warn' calls the operator 'notify_staff', which the service does not register "
        "(it has: escalate, publish)",
        "  - the task 'respond' is missing (the API completes it by that name)",
    ]


@pytest.mark.parametrize("replacements, said", [
    ([('priority == "urgent"', "priority.__class__ == str")], "f_route_notify (conditionExpression): the attribute .__class__"),
    ([('value="escalation_level + 1"', "value=\"open('/etc/passwd').read()\"")], "escalate_case (parameter 'to_level'): open() is not allowed"),
    ([("<bpmn:formalExpression>case_id</bpmn:formalExpression>",
       "<bpmn:formalExpression>case_id.__class__</bpmn:formalExpression>")], "case_id (formalExpression): the attribute .__class__"),
    ([("escalation_level = 0", "escalation_level = [(g for g in [])][0].gi_frame")],
     "prepare (script): the attribute .gi_frame is not allowed"),
    ([('>"PT1H"<', '>"PT1X"<')], "assign_overdue (timeDuration): 'PT1X' is not an ISO 8601 duration"),
    ([('>"PT1H"<', '>"2026-11-22T10:00:00"<'), ("timeDuration", "timeDate")], "has no time zone"),
    ([('<bpmn:userTask id="close"', '<bpmn:manualTask id="close_it"'), ("</bpmn:userTask>\n    <bpmn:endEvent id=\"end\"",
                                                                         "</bpmn:manualTask>\n    <bpmn:endEvent id=\"end\"")],
     "the task 'close' is missing"),
])
def test_each_kind_of_problem_is_named_with_its_place(replacements, said):
    found = problems(variant(*replacements), required_tasks=("assign", "close"))
    assert any(said in problem for problem in found), found


def test_a_required_name_that_is_not_a_user_task_is_a_problem():
    assert problems(TEXT, required_tasks=("escalate_case",)) == [
        "'escalate_case' is a serviceTask, not a user task (the API completes it by that name)"]


def test_a_file_without_its_diagram_layout_is_refused():
    bare = TEXT[:TEXT.index("  <bpmndi:BPMNDiagram")] + "</bpmn:definitions>\n"
    assert problems(bare) == ["no diagram layout (BPMN DI): the file would open as an empty canvas in bpmn.io; "
                              "save it from bpmn.io or Camunda Modeler"]
    undrawn = variant(('<bpmndi:BPMNShape id="warned_di" bpmnElement="warned">', '<bpmndi:BPMNShape id="x_di">'),
                      ('<bpmndi:BPMNEdge id="f_warn_warned_di" bpmnElement="f_warn_warned">', '<bpmndi:BPMNEdge id="y_di">'))
    assert problems(undrawn) == ["no diagram layout for warned, f_warn_warned (each element needs its BPMNShape "
                                 "or BPMNEdge)"]


def test_what_is_not_bpmn_or_does_not_parse_is_said_plainly(tmp_path):
    assert problems("<bpmn")[0].startswith("not well-formed XML")
    assert problems("<definitions/>") == ["not a BPMN 2.0 file (the root element must be bpmn:definitions)"]
    broken = variant(('targetRef="close" />', 'targetRef="nowhere" />'))
    assert any(p.startswith("does not parse:") and "nowhere" in p for p in problems(broken))
    assert check_text(b"", "x").problems[0].startswith("not well-formed XML")
    assert [p for p in problems(TEXT) if "cannot read" in p] == []


def test_the_command_says_when_the_file_cannot_be_read(capsys, tmp_path):
    code, _, err = run(capsys, "process", "check", str(tmp_path / "missing.bpmn"))
    assert code == 1 and "cannot read it" in err


def test_load_definition_refuses_a_file_that_fails_the_check():
    with pytest.raises(InvalidProcess) as refused:
        load_definition(EXAMPLE, required_tasks=("respond",))
    assert refused.value.problems == ["the task 'respond' is missing (the API completes it by that name)"]


def test_the_hash_is_of_what_executes_not_of_the_layout_or_the_file_name():
    original = load_definition(EXAMPLE)
    moved = parse_definition(variant(('x="240" y="200"', 'x="260" y="210"')), filename="elsewhere/renamed.bpmn")
    changed = parse_definition(variant(('>"PT1H"<', '>"PT2H"<')))
    assert len(original.hash) == 64 and original.process_id == "example_case"
    assert moved.hash == original.hash
    assert changed.hash != original.hash
    assert parse_definition(TEXT).spec == parse_definition(TEXT).spec  # deterministic
    assert "workflow_fixtures" not in original.spec  # no machine's path in the database


def test_a_call_activity_to_a_process_the_file_lacks_is_a_problem_not_a_crash_at_load():
    calling = variant(('<bpmn:userTask id="close" name="Close the case">',
                       '<bpmn:callActivity id="close" name="Close the case" calledElement="nowhere">'),
                      ("</bpmn:userTask>\n    <bpmn:endEvent", "</bpmn:callActivity>\n    <bpmn:endEvent"))
    found = problems(calling)
    assert len(found) == 1 and found[0].startswith("does not parse:") and "'nowhere' was not found" in found[0], found
    with pytest.raises(InvalidProcess, match="nowhere"):
        parse_definition(calling)


def test_an_operator_outside_any_service_task_with_a_taken_id_is_named_not_a_crash():
    stray = variant(("<bpmn:process", '<spiffworkflow:serviceTaskOperator id="assign" /><bpmn:process'))
    assert problems(stray)[0] == ("the id 'assign' is used by the operator 'assign' outside any service task and "
                                  "userTask 'assign': ids must be unique (SpiffWorkflow's parser takes one for the other)")


def test_an_expression_or_timer_nested_too_deeply_is_a_problem_not_a_crash():
    deep = "-" * 20000 + "1"
    assert problems(variant(('>priority == "urgent"<', f">{deep}<"))) == [
        "f_route_notify (conditionExpression): not valid Python (nested too deeply)"]
    assert problems(variant(('>"PT1H"<', f">{deep}<"))) == [
        "assign_overdue (timeDuration): not valid Python (nested too deeply)"]


def test_load_definition_reads_a_file_in_the_encoding_it_declares_and_refuses_one_it_cannot_read(tmp_path):
    gbk = tmp_path / "gbk.bpmn"
    gbk.write_bytes(variant(('encoding="UTF-8"', 'encoding="GBK"'), ("Assign an owner", "指派负责人")).encode("gbk"))
    assert check_text(gbk.read_bytes()).problems == []
    loaded = load_definition(gbk)
    assert "指派负责人" in loaded.bpmn and loaded.hash != load_definition(EXAMPLE).hash  # the task's name changed

    with pytest.raises(InvalidProcess) as refused:
        load_definition(tmp_path / "missing.bpmn")
    assert refused.value.problems == ["cannot read it: No such file or directory"]


def test_one_operator_may_serve_several_service_tasks_with_parameters_of_the_same_name():
    """Parameters and operators are never looked up by id: only a clash with a BPMN element matters."""
    twice = variant(('<spiffworkflow:parameter id="role" type="str" value="\'store_manager\'" />',
                     '<spiffworkflow:parameter id="to_level" type="int" value="1" />'))
    assert problems(twice, operators={"escalate", "notify_staff", "publish"}) == []
