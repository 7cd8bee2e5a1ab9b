"""What aftercare's workers get besides the database and the runtime: the visit process (its
.bpmn file, checked and loaded once at start) and the engine that runs it on the service's
clock; the customer's contact read from intake, the contact holder (shared.security.contact)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shared.security.contact import CONTACT_TIMEOUT, contact_reader
from shared.workflow import ProcessDefinition, ProcessEngine, effect_operators, load_definition

PROCESS_DIR = Path(__file__).resolve().parent / "processes"
PROCESS_ID = "return_visit"
REQUIRED_TASKS = ("call",)  # what POST /v1/visits/{id}/attempts completes
CONTACT_CALL = "intake.get_contact"  # intake's RPC; a grant is made for this call only


# The process's service tasks call these; what they mean for the visit handlers._apply applies.
OPERATORS = effect_operators("message_customer", "visit_abandoned")


@dataclass(frozen=True)
class VisitProcess:
    engine: ProcessEngine
    definition: ProcessDefinition

    def register(self, database) -> None:
        """Store the definition once (the first visit), committed on its own."""
        self.engine.registered(database, self.definition)


def load_process(directory: str | os.PathLike | None, clock) -> VisitProcess:
    """The visit process from `directory` (default: the service's own), refused at start with
    every problem `closeloop process check` finds."""
    directory = Path(directory) if directory else PROCESS_DIR
    definition = load_definition(directory / f"{PROCESS_ID}.bpmn", PROCESS_ID, required_tasks=REQUIRED_TASKS,
                                 operators=OPERATORS)
    return VisitProcess(ProcessEngine(OPERATORS, clock=clock), definition)


def visit_contact_reader(intake_rpc, timeout: float = CONTACT_TIMEOUT):
    """`read(identity, record_id, purpose)` -> the contact of the sale's or complaint's customer
    for the agent working the visit (logged by intake), or ContactUnavailable."""
    return contact_reader(intake_rpc, CONTACT_CALL, timeout)
