"""The BPMN workflow engine every service with processes uses (investigation's cases,
aftercare's visits): SpiffWorkflow 3.2.0 wrapped so that instances live in the service's own
database, step inside its unit of work, run only restricted expressions, and keep time by an
injectable clock. Services own their .bpmn files and operators; this package has no business
rules.

    definition = load_definition("processes/complaint_case.bpmn", required_tasks=("assign",),
                                 operators=OPERATORS)
    engine = ProcessEngine(OPERATORS, clock=clock)
    with store.unit_of_work() as uow:
        result = engine.start(uow.conn, case_id, definition, {"priority": "urgent"})
        for effect in result.effects:
            ...  # the service's outbox events, in the same transaction
    with store.unit_of_work() as uow:  # waiting for the customer: the timers stop...
        engine.hold(uow.conn, case_id)
    with store.unit_of_work() as uow:  # ...and run on, due later by the pause or by new clocks
        engine.release(uow.conn, case_id, {"clocks": new_clocks})
"""
from shared.workflow.check import check_file, check_text
from shared.workflow.definitions import ProcessDefinition, load_definition, parse_definition
from shared.workflow.engine import ProcessEngine, Step, StepResult, TimerInfo, TimerRound, WaitingTask
from shared.workflow.errors import (
    DataRefused, InstanceExists, InstanceNotFound, InvalidProcess, NotHeld, NoWaitingInstance, ProcessLoops,
    ScriptRefused, TaskNotWaiting, TimerExpressionError, UnknownOperator, WorkflowError,
)
from shared.workflow.scripting import Effect, OperatorCall, effect_operators
from shared.workflow.tables import add_tables, create_tables_v1, downgrade_tables_v2, upgrade_tables_v2

__all__ = [
    "check_file", "check_text", "ProcessDefinition", "load_definition", "parse_definition", "ProcessEngine", "Step",
    "StepResult", "TimerInfo", "TimerRound", "WaitingTask", "DataRefused", "InstanceExists", "InstanceNotFound",
    "InvalidProcess", "NotHeld", "NoWaitingInstance", "ProcessLoops", "ScriptRefused", "TaskNotWaiting",
    "TimerExpressionError", "UnknownOperator", "WorkflowError", "Effect", "OperatorCall", "effect_operators",
    "add_tables",
    "create_tables_v1", "upgrade_tables_v2", "downgrade_tables_v2",
]
