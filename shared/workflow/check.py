"""`closeloop process check`: does a changed .bpmn parse, use only allowed expressions, keep the
task names the API relies on, and carry its diagram layout? Each problem is one line of text
saying where and what. The engine runs the same check before it stores a definition, so a
service refuses to start on a file that fails it."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser

from shared.workflow.errors import TimerExpressionError
from shared.workflow.scripting import refusals, syntax_tree
from shared.workflow.timers import cycle_start, duration_after, parse_date_time

BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI = "http://www.omg.org/spec/BPMN/20100524/DI"
SPIFF = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN, "bpmndi": BPMNDI, "spiffworkflow": SPIFF}

FLOW_NODES = ("startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent",
              "task", "userTask", "manualTask", "serviceTask", "scriptTask", "sendTask", "receiveTask",
              "businessRuleTask", "callActivity", "subProcess", "transaction", "adHocSubProcess",
              "exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway", "complexGateway")
USER_TASKS = ("userTask", "manualTask")
# Elements whose text SpiffWorkflow runs as Python, and how: an expression or a script.
CODE_ELEMENTS = {
    (BPMN, "script"): "exec", (SPIFF, "preScript"): "exec", (SPIFF, "postScript"): "exec",
    (BPMN, "conditionExpression"): "eval", (BPMN, "condition"): "eval", (BPMN, "completionCondition"): "eval",
    (BPMN, "loopCondition"): "eval", (BPMN, "loopCardinality"): "eval", (BPMN, "formalExpression"): "eval",
    (BPMN, "timeDate"): "eval", (BPMN, "timeDuration"): "eval", (BPMN, "timeCycle"): "eval",
    (SPIFF, "messagePayload"): "eval", (SPIFF, "expression"): "eval", (SPIFF, "payloadExpression"): "eval",
}
TIMERS = ("timeDate", "timeDuration", "timeCycle")
_LOOKS_LIKE_TIME = re.compile(r"^(R\d*/|P\d|PT\d|\d{4}-\d{2}-\d{2})", re.IGNORECASE)


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    parser: SpiffBpmnParser | None = None
    process_ids: list[str] = field(default_factory=list)
    text: str | None = None  # the file as text, read in the encoding it declares (once it is XML)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_file(path: str | Path, required_tasks=(), operators=None) -> CheckReport:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        return CheckReport([f"cannot read it: {exc.strerror}"])
    return check_text(text, str(path), required_tasks, operators)


def check_text(text: bytes | str, filename: str = "<process>", required_tasks=(), operators=None) -> CheckReport:
    """Every problem of a process file. `required_tasks`: user task ids the API relies on;
    `operators`: the service-task operators the service registers (None: not checked)."""
    report = CheckReport()
    try:
        root = etree.fromstring(text, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        report.problems.append(f"not well-formed XML: {exc}")
        return report
    if root.tag != f"{{{BPMN}}}definitions":
        report.problems.append("not a BPMN 2.0 file (the root element must be bpmn:definitions)")
        return report
    encoding = root.getroottree().docinfo.encoding or "UTF-8"  # what the file declares: UTF-8, GBK...
    try:
        report.text = text if isinstance(text, str) else text.decode(encoding)
    except (LookupError, UnicodeDecodeError):  # one libxml2 reads and Python does not
        report.problems.append(f"encoded {encoding}, which the engine does not read: save it as UTF-8")
        return report
    duplicates = _duplicate_ids(root)
    report.problems += duplicates
    report.problems += _expressions(root)
    report.problems += _operators(root, operators)
    report.problems += _required(root, required_tasks)
    report.problems += _layout(root)
    if not duplicates:  # the parser would take one element for another and say something misleading
        _parse(root, filename, report)
    return report


def _label(element) -> str:
    kind = etree.QName(element).localname
    if kind == "serviceTaskOperator":
        task = next(element.iterancestors(f"{{{BPMN}}}serviceTask"), None)
        where = f"of service task {task.get('id')!r}" if task is not None else "outside any service task"
        return f"the operator {element.get('id')!r} {where}"
    if kind == "parameter":
        return f"a parameter of service task {_owner(element)!r}"
    return f"{kind} {element.get('id')!r}"


def _duplicate_ids(root) -> list[str]:
    """SpiffWorkflow indexes every element with an id, extension elements included, and finds
    flow nodes by id: two BPMN elements with one id, or an operator or parameter named like a
    BPMN element (a service-task operator named like a task), make the parser take one for the
    other. Extension elements sharing an id among themselves are never looked up by it: one
    operator may serve several service tasks, each passing a parameter of the same name."""
    seen: dict[str, list] = {}
    for element in root.iter():
        if isinstance(element.tag, str) and element.get("id") is not None:
            seen.setdefault(element.get("id"), []).append(element)
    problems = []
    for element_id, elements in seen.items():
        flow = [e for e in elements if etree.QName(e).namespace != SPIFF]
        if len(flow) > 1 or (flow and len(elements) > 1):
            problems.append(f"the id {element_id!r} is used by {' and '.join(_label(e) for e in elements)}: "
                            "ids must be unique (SpiffWorkflow's parser takes one for the other)")
    return problems


def _owner(element) -> str:
    """The id of the flow node or sequence flow an element belongs to."""
    node = element
    while node is not None:
        if isinstance(node.tag, str):
            name = etree.QName(node).localname
            if name in FLOW_NODES or name in ("sequenceFlow", "correlationProperty", "message", "signal"):
                return node.get("id") or name
        node = node.getparent()
    return "the file"


def _expressions(root) -> list[str]:
    problems = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        qname = etree.QName(element)
        mode = CODE_ELEMENTS.get((qname.namespace, qname.localname))
        if mode is not None and (element.text or "").strip():
            where = f"{_owner(element)} ({qname.localname})"
            problems += [f"{where}: {problem}" for problem in refusals(element.text.strip(), mode)]
            if qname.localname in TIMERS:
                problems += _timer_literal(where, qname.localname, element.text.strip())
        if (qname.namespace, qname.localname) == (SPIFF, "parameter") and element.get("value"):
            where = f"{_owner(element)} (parameter {element.get('id')!r})"
            problems += [f"{where}: {problem}" for problem in refusals(element.get("value"), "eval")]
    return problems


def _timer_literal(where: str, kind: str, expression: str) -> list[str]:
    """Timer expressions are Python: `PT1H` unquoted is a variable that does not exist."""
    try:
        tree = syntax_tree(expression, "eval").body
    except SyntaxError:
        tree = None
    if (tree is None or isinstance(tree, ast.Name)) and _LOOKS_LIKE_TIME.match(expression):
        return [f"{where}: {expression} is read as Python; quote it: \"{expression}\""]
    if not (isinstance(tree, ast.Constant) and isinstance(tree.value, str)):
        return []  # computed when the timer starts; checked then
    try:
        if kind == "timeDuration":
            duration_after(datetime(2000, 1, 1, tzinfo=timezone.utc), tree.value, where)
        elif kind == "timeDate":
            parse_date_time(tree.value, where)
        else:
            cycle_start(tree.value, datetime(2000, 1, 1, tzinfo=timezone.utc), where)
    except TimerExpressionError as exc:
        return [str(exc)]
    return []


def _operators(root, operators) -> list[str]:
    problems = []
    for task in root.iterfind(".//bpmn:serviceTask", NS):
        operator = task.find("bpmn:extensionElements/spiffworkflow:serviceTaskOperator", NS)
        if operator is None or not operator.get("id"):
            problems.append(f"service task {task.get('id')!r} names no operator (spiffworkflow:serviceTaskOperator)")
        elif operators is not None and operator.get("id") not in operators:
            problems.append(f"service task {task.get('id')!r} calls the operator {operator.get('id')!r}, which the "
                            f"service does not register (it has: {', '.join(sorted(operators)) or 'none'})")
    return problems


def _required(root, required_tasks) -> list[str]:
    problems = []
    for name in required_tasks:
        found = [e for e in root.iter() if isinstance(e.tag, str) and e.get("id") == name]
        kinds = [etree.QName(e).localname for e in found]
        if not found:
            problems.append(f"the task {name!r} is missing (the API completes it by that name)")
        elif not any(kind in USER_TASKS for kind in kinds):
            problems.append(f"{name!r} is a {kinds[0]}, not a user task (the API completes it by that name)")
    return problems


def _layout(root) -> list[str]:
    """BPMN DI: without it bpmn.io and Camunda Modeler open the file as an empty canvas."""
    if root.find("bpmndi:BPMNDiagram", NS) is None:
        return ["no diagram layout (BPMN DI): the file would open as an empty canvas in bpmn.io; "
                "save it from bpmn.io or Camunda Modeler"]
    drawn = {e.get("bpmnElement") for e in root.iterfind(".//bpmndi:BPMNShape", NS)}
    drawn |= {e.get("bpmnElement") for e in root.iterfind(".//bpmndi:BPMNEdge", NS)}
    missing = [e.get("id") for e in root.iterfind(".//bpmn:process//*", NS)
               if isinstance(e.tag, str) and etree.QName(e).namespace == BPMN
               and etree.QName(e).localname in (*FLOW_NODES, "sequenceFlow") and e.get("id") not in drawn]
    if missing:
        return [f"no diagram layout for {', '.join(missing)} (each element needs its BPMNShape or BPMNEdge)"]
    return []


def _parse(root, filename: str, report: CheckReport) -> None:
    parser = SpiffBpmnParser(validator=VALIDATOR)
    try:
        parser.add_bpmn_xml(root, filename)
        report.process_ids = parser.get_process_ids()
        if not report.process_ids:
            report.problems.append("no executable process (isExecutable=\"true\")")
        for process_id in report.process_ids:  # what load_definition takes: the spec and what it calls
            parser.get_subprocess_specs(process_id)
    except Exception as exc:  # ValidationException, lxml's DocumentInvalid, and plain ones for some malformed files
        report.problems.append(f"does not parse: {_parse_message(exc)}")
        return
    report.parser = parser


def _parse_message(exc: Exception) -> str:
    message = (str(exc).splitlines() or [type(exc).__name__])[0]
    message = re.sub(r"\.(\s*\.)+", ".", message).strip(" .") or type(exc).__name__
    if isinstance(exc, ValidationException):
        where = ", ".join(part for part in (f"line {exc.line_number}" if exc.line_number else "",
                                            f"element {exc.id!r}" if exc.id else "") if part)
        if where:
            message = f"{message} ({where})"
    return message
