"""What the workflow engine refuses, one class per answer a service gives: an unknown instance is
a 404, a task that is not waiting a 409, a message nobody waits for is parked in the dead-letter
path, a bad process file stops the service at start."""
from __future__ import annotations


class WorkflowError(Exception):
    """Base of the engine's refusals."""


class InvalidProcess(WorkflowError):
    """A process file that does not pass `closeloop process check`."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class ScriptRefused(WorkflowError):
    """An expression or script of a process uses a construct the engine does not run."""

    def __init__(self, where: str, construct: str, source: str):
        self.where, self.construct, self.source = where, construct, source
        super().__init__(f"{where}: {construct}, in {source.strip()!r}")


class UnknownOperator(WorkflowError):
    """A service task names an operator the service did not register."""

    def __init__(self, where: str, operator: str, known: list[str]):
        self.where, self.operator = where, operator
        super().__init__(f"{where} calls the operator {operator!r}, which is not registered "
                         f"(registered: {', '.join(known) or 'none'})")


class TimerExpressionError(WorkflowError):
    """A timer's expression did not give an ISO 8601 date-time, duration or cycle."""


class DataRefused(WorkflowError):
    """Data given to a process that it could not hold (not a JSON object, a reserved key)."""


class InstanceNotFound(WorkflowError):
    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        super().__init__(f"no process instance {instance_id!r}")


class InstanceExists(WorkflowError):
    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        super().__init__(f"process instance {instance_id!r} already exists")


class TaskNotWaiting(WorkflowError):
    """The task is not waiting for anyone now (done, not reached yet, or no such task)."""

    def __init__(self, instance_id: str, task: str, waiting: list[str]):
        self.instance_id, self.task, self.waiting = instance_id, task, list(waiting)
        super().__init__(f"task {task!r} of {instance_id!r} is not waiting "
                         f"(waiting: {', '.join(self.waiting) or 'nothing'})")


class NoWaitingInstance(WorkflowError):
    """No running instance with this correlation key waits for this message: the consumer parks
    the message (dead-letter path) instead of dropping it."""

    def __init__(self, message: str, key: str, waiting: dict[str, list[str]]):
        self.message, self.key, self.waiting = message, key, waiting
        seen = "; ".join(f"{instance} waits for {', '.join(names) or 'no message'}"
                         for instance, names in waiting.items()) or "no running instance has that key"
        super().__init__(f"nothing waits for message {message!r} with key {key!r} ({seen})")


class ProcessLoops(WorkflowError):
    """Stepping never came to rest: a process that loops without waiting for anything."""


class NotHeld(WorkflowError):
    """Release of an instance whose timers are not held."""

    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        super().__init__(f"process instance {instance_id!r} is not held")
