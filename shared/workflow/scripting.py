"""What a process file may compute: conditions, scripts, timer expressions and service-task
parameters run as Python, so they run restricted. SpiffWorkflow evaluates them with `eval`/`exec`
and every builtin; a chain's process owner edits these files, so a file must not be able to
import, open files or reach an object's internals.

Every expression is checked on its syntax tree before it runs (and by `closeloop process check`
before it is deployed): no imports, no names or attributes starting with `_` (the way from any
object to its class, its module and `__builtins__`), no attributes of frames, code objects or
tracebacks (`gi_frame`, `f_back`, `f_globals`...: the other way there), no `str.format` (which
reaches attributes from inside a string), no definitions of functions or classes, and only the
builtins below."""
from __future__ import annotations

import ast
import builtins
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from types import CodeType
from typing import Any, Callable, Mapping

from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment

from shared.workflow.errors import DataRefused, ScriptRefused, UnknownOperator

SAFE_BUILTINS = {name: getattr(builtins, name) for name in (
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float", "format", "frozenset",
    "int", "isinstance", "len", "list", "map", "max", "min", "next", "range", "reversed", "round", "set",
    "sorted", "str", "sum", "tuple", "zip",
    "Exception", "ValueError", "KeyError", "TypeError", "ArithmeticError", "LookupError",
)}
# Named so that a refusal says what was tried; none of them is in SAFE_BUILTINS anyway.
_DANGEROUS = {"eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "globals", "locals", "vars",
              "dir", "type", "object", "super", "breakpoint", "input", "help", "memoryview", "classmethod",
              "staticmethod", "property", "exit", "quit", "id", "hash", "bytearray", "callable"}
# A generator's frame (gi_frame), then its callers' (f_back), reach the engine's own module
# globals and their full builtins (f_globals['__builtins__']) without a single '_' attribute:
# frames, code objects and tracebacks are refused as a whole (as RestrictedPython does).
_INTERPRETER_ATTRIBUTES = ("f_", "gi_", "cr_", "ag_", "tb_", "co_")
_STATEMENTS = {
    ast.Import: "import", ast.ImportFrom: "import", ast.Global: "global", ast.Nonlocal: "nonlocal",
    ast.FunctionDef: "def", ast.AsyncFunctionDef: "async def", ast.ClassDef: "class", ast.With: "with",
    ast.AsyncWith: "async with", ast.AsyncFor: "async for", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield from",
}


def syntax_tree(source: str, mode: str) -> ast.AST:
    """`ast.parse`, with what CPython's parser gives up on (nesting too deep for it: a
    RecursionError or MemoryError) raised as the SyntaxError it is to whoever wrote the file."""
    try:
        return ast.parse(source, mode=mode)
    except (RecursionError, MemoryError):
        raise SyntaxError("nested too deeply") from None


def refusals(source: str, mode: str = "eval") -> list[str]:
    """Every construct in `source` that a process may not use ([] when it may run). `mode` is
    "eval" for an expression, "exec" for a script."""
    try:
        tree = syntax_tree(source, mode)
    except SyntaxError as exc:
        return [f"not valid Python ({exc.msg}" + (f", line {exc.lineno})" if exc.lineno else ")")]
    found: list[str] = []
    for node in ast.walk(tree):
        what = _refused(node)
        if what and what not in found:
            found.append(what)
    return found


def _refused(node: ast.AST) -> str | None:
    if type(node) in _STATEMENTS:
        return f"'{_STATEMENTS[type(node)]}' is not allowed"
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            return f"the name {node.id} is not allowed (no names starting with '__')"
        if node.id in _DANGEROUS:
            return f"{node.id}() is not allowed"
    if isinstance(node, ast.Attribute):
        return _refused_attribute(node.attr)
    if isinstance(node, ast.MatchClass):  # `case str(__class__=c)` reads the attribute too
        return next(filter(None, map(_refused_attribute, node.kwd_attrs)), None)
    return None


def _refused_attribute(attr: str) -> str | None:
    if attr.startswith("_"):
        return f"the attribute .{attr} is not allowed (no attributes starting with '_')"
    if attr.startswith(_INTERPRETER_ATTRIBUTES):
        return f"the attribute .{attr} is not allowed (no frames, code or tracebacks)"
    if attr in ("format", "format_map"):
        return f".{attr}() is not allowed (use an f-string)"
    return None


@lru_cache(maxsize=4096)
def _compile(source: str, mode: str) -> CodeType | tuple[str, ...]:
    problems = refusals(source, mode)
    return tuple(problems) if problems else compile(source, "<process>", mode)


def compiled(source: str, mode: str, where: str) -> CodeType:
    """The code of an allowed expression or script (compiled once), else ScriptRefused naming
    `where` (the task) and the first construct refused."""
    code = _compile(source, mode)
    if isinstance(code, tuple):
        raise ScriptRefused(where, code[0], source)
    return code


# As for HTTP bodies (shared.web.http.MAX_DEPTH): far deeper than any real data, far shallower
# than what SpiffWorkflow's deep copies of task data survive (a few hundred levels).
MAX_DEPTH = 32


def check_data(data: Mapping, helpers: Mapping, what: str) -> None:
    """Data that enters a process (start data, a completed task's form, a message's payload):
    a JSON object whose keys are names a script may use and no helper's name, nested at most
    MAX_DEPTH levels, with text PostgreSQL can store."""
    if not isinstance(data, Mapping):
        raise DataRefused(f"{what} must be an object, not {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or key.startswith("_"):
            raise DataRefused(f"{what}: the key {key!r} is not allowed (keys are text not starting with '_')")
        if key in helpers:
            raise DataRefused(f"{what}: the key {key!r} would hide the process helper of that name")
    if _deeper_than(data, MAX_DEPTH):
        raise DataRefused(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone surrogate is no UTF-8
    except (TypeError, ValueError) as exc:
        raise DataRefused(f"{what} must be plain JSON: {exc}") from None


def _deeper_than(value, levels: int) -> bool:
    """A list or object `levels` levels below this one (never walks further down)."""
    children = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else None
    if children is None:
        return False
    return levels == 0 or any(_deeper_than(child, levels - 1) for child in children)


def default_helpers(clock) -> dict[str, Callable]:
    """What every process may call besides the builtins: the engine's clock (never the
    machine's: tests move it) and date arithmetic."""
    def parse_datetime(text: str) -> datetime:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone")
        return value

    def isoformat(value: datetime) -> str:
        return value.astimezone(timezone.utc).isoformat()

    return {"now": clock.now, "timedelta": timedelta, "parse_datetime": parse_datetime, "isoformat": isoformat}


class RestrictedEnvironment(TaskDataEnvironment):
    """SpiffWorkflow's task-data environment with checked code, SAFE_BUILTINS and the helpers.
    It also serves the correlation expressions that SpiffWorkflow evaluates without a task."""

    def __init__(self, helpers: Mapping[str, Callable]):
        super().__init__(dict(helpers))

    def evaluate(self, expression, context, external_context=None):
        code = compiled(expression, "eval", "expression")
        scope = dict(self.globals)
        scope.update(external_context or {})
        scope.update(context)
        scope["__builtins__"] = SAFE_BUILTINS  # last: task data cannot bring its own
        return eval(code, scope)

    def execute(self, script, context, external_context=None):
        code = compiled(script, "exec", "script")
        self.check_for_overwrite(context, external_context or {})
        context.update(self.globals)
        context.update(external_context or {})
        context["__builtins__"] = SAFE_BUILTINS
        try:
            exec(code, context)
        finally:
            self._remove_globals_and_functions_from_context(context, external_context)
        return True


@dataclass(frozen=True)
class OperatorCall:
    """What a service task asks of an operator: its parameters, evaluated in the process."""
    instance_id: str
    task: str
    operator: str
    params: dict
    now: datetime


def effect_operators(*names: str) -> dict[str, Callable[[OperatorCall], None]]:
    """Operators that do nothing but be called: what each call means is applied by the service
    from the step's effects, in the same transaction (its handlers' `_apply`)."""
    return {name: _effect_only for name in names}


def _effect_only(call: OperatorCall) -> None:
    return None


@dataclass(frozen=True)
class Effect:
    """Something the process asked for during an operation, for the service to turn into outbox
    events or messages in the same transaction: a service task's operator call ("operator"),
    or a BPMN message thrown that nothing in the process caught ("message")."""
    kind: str
    name: str
    task: str | None
    params: dict
    result: Any
    at: datetime

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "task": self.task, "params": self.params,
                "result": self.result, "at": self.at.isoformat()}


class ScriptEngine(PythonScriptEngine):
    """One per operation on one instance, attached to the workflow after every restore: it
    carries the clock, the service's operators and the effects this operation collects, so
    that instances stepped side by side never share them. `held_since`: the instant the
    instance's timers were held (see ProcessEngine.hold), None when they run."""

    def __init__(self, environment: RestrictedEnvironment, clock, operators: Mapping[str, Callable[[OperatorCall], Any]],
                 instance_id: str, held_since: datetime | None = None):
        super().__init__(environment)
        self.clock = clock
        self.operators = operators
        self.instance_id = instance_id
        self.held_since = held_since
        self.effects: list[Effect] = []

    def timer_now(self) -> datetime:
        """The time the timers see: the clock's, or, while the instance is held, the instant it
        was held (so none falls due). Steps, operator calls and now() keep the clock's."""
        return self.held_since if self.held_since is not None else self.clock.now()

    def evaluate(self, task, expression, external_context=None):
        compiled(expression, "eval", _where(task))  # refuse naming the task, before SpiffWorkflow wraps it
        return super().evaluate(task, expression, external_context)

    def execute(self, task, script, external_context=None):
        compiled(script, "exec", _where(task))
        return super().execute(task, script, external_context)

    def call_service(self, task, operation_name, operation_params):
        """A service task: call the service's operator, record the call as an effect, and give
        the process the operator's result (JSON, as SpiffWorkflow's service task expects)."""
        operator = self.operators.get(operation_name)
        if operator is None:
            raise UnknownOperator(_where(task), operation_name, sorted(self.operators))
        params = {name: param["value"] for name, param in operation_params.items()}
        now = self.clock.now()
        result = operator(OperatorCall(self.instance_id, task.task_spec.bpmn_id, operation_name, params, now))
        self.effects.append(Effect("operator", operation_name, task.task_spec.bpmn_id, params, result, now))
        return json.dumps(result)


def _where(task) -> str:
    return f"task {task.task_spec.bpmn_id or task.task_spec.name!r}"
