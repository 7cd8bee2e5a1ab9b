"""What investigation's workers get besides the database and the runtime: the case processes
(the .bpmn files, checked and loaded once at start) and the engine that runs them on the
service's clock; the customer's contact read from intake, the contact holder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shared.security.contact import CONTACT_TIMEOUT, contact_reader
from shared.workflow import ProcessDefinition, ProcessEngine, effect_operators, load_definition

PROCESS_DIR = Path(__file__).resolve().parent / "processes"
# The tasks the API completes by name, per process: `closeloop process check --requires` them.
REQUIRED_TASKS = {"complaint_case": ("assign", "respond", "record_findings", "propose_remedy", "approve", "fulfil",
                                    "notify_customer", "open_corrective_action", "await_follow_up",
                                    "close_corrective_action"),
                  "feedback_case": ("acknowledge", "decide", "pass_on"),
                  "inquiry_case": ("answer",)}
# Which process a case of each kind runs.
PROCESS_OF_KIND = {"complaint": "complaint_case", "suggestion": "feedback_case", "praise": "feedback_case",
                   "inquiry": "inquiry_case"}


# The process's timers call these; what they mean for the case handlers._apply applies.
OPERATORS = effect_operators("sla_warning", "sla_breached", "promise_deadline", "corrective_action_deadline")


@dataclass(frozen=True)
class CaseProcesses:
    engine: ProcessEngine
    definitions: dict[str, ProcessDefinition]  # by process id

    def for_kind(self, kind: str) -> ProcessDefinition:
        return self.definitions[PROCESS_OF_KIND[kind]]

    def register(self, database) -> None:
        """Store the definitions once per process (its first case), committed on their own."""
        self.engine.registered(database, *self.definitions.values())


def load_processes(directory: str | os.PathLike | None, clock) -> CaseProcesses:
    """The processes from `directory` (default: the service's own), each refused at start with
    every problem `closeloop process check` finds."""
    directory = Path(directory) if directory else PROCESS_DIR
    definitions = {process_id: load_definition(directory / f"{process_id}.bpmn", process_id,
                                               required_tasks=tasks, operators=OPERATORS)
                   for process_id, tasks in REQUIRED_TASKS.items()}
    return CaseProcesses(ProcessEngine(OPERATORS, clock=clock), definitions)


# -- the customer's contact, from intake (shared.security.contact) --------------------------------

ARCHIVE_CONTACT_CALL = "intake.get_archived_contact"  # intake's RPC; a grant is made for this call only


def archived_contact_reader(intake_rpc, timeout: float = CONTACT_TIMEOUT):
    """`read(identity, record_id, purpose)` -> the contact intake gives this HQ user or auditor
    for this closed record and purpose (logged in intake's contact-access log), or ContactUnavailable."""
    return contact_reader(intake_rpc, ARCHIVE_CONTACT_CALL, timeout)
