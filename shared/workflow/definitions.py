"""Process definitions: a .bpmn file parsed with SpiffWorkflow's spiff parser (the plain
BpmnParser ignores service tasks), its spec serialized, and stored once per content hash.
Instances reference the hash, so a running instance keeps the version it started with while new
instances take a changed file."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.workflow import state
from shared.workflow.check import CheckReport, check_file, check_text
from shared.workflow.errors import InvalidProcess
from shared.workflow.tables import DEFINITIONS


@dataclass(frozen=True)
class ProcessDefinition:
    hash: str          # sha256 of the spec as it executes (a layout-only edit is the same version)
    process_id: str
    spec: str          # the serialized spec and its subprocess specs (JSON text)
    bpmn: str          # the file as it was, to show the version an instance runs


def load_definition(path: str | Path, process_id: str | None = None, *, required_tasks=(),
                    operators=None) -> ProcessDefinition:
    """The definition of a process file that passes `closeloop process check` (else
    InvalidProcess listing every problem): what a service loads at start."""
    report = check_file(path, required_tasks, operators)
    if not report.ok:
        raise InvalidProcess(str(path), report.problems)
    return _definition(report, process_id, str(path))


def parse_definition(text: str | bytes, process_id: str | None = None, filename: str = "<process>") -> ProcessDefinition:
    """A definition from BPMN text, refusing only what does not parse. The engine still checks
    every expression when it runs: this is for tests and for files already checked."""
    report = check_text(text.encode() if isinstance(text, str) else text, filename)
    if report.parser is None:
        raise InvalidProcess(filename, report.problems)
    return _definition(report, process_id, filename)


def _definition(report: CheckReport, process_id: str | None, source: str) -> ProcessDefinition:
    ids = report.process_ids
    if process_id is None:
        if len(ids) != 1:
            raise InvalidProcess(source, [f"name the process to run: the file has {', '.join(ids)}"])
        process_id = ids[0]
    elif process_id not in ids:
        raise InvalidProcess(source, [f"no executable process {process_id!r} (it has: {', '.join(ids)})"])
    spec = report.parser.get_spec(process_id)
    subprocess_specs = report.parser.get_subprocess_specs(process_id)
    for each in (spec, *subprocess_specs.values()):
        each.file = Path(each.file).name if each.file else None  # no machine's path in the database
    spec_json = state.spec_to_json(spec, subprocess_specs)
    digest = content_hash(spec_json)
    return ProcessDefinition(digest, process_id, spec_json, report.text)


def content_hash(spec_json: str) -> str:
    """sha256 of what executes: the spec with sorted keys, without the file's name."""
    dct = json.loads(spec_json)
    for each in (dct["spec"], *dct["subprocess_specs"].values()):
        each.pop("file", None)
    return hashlib.sha256(json.dumps(dct, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def store(conn: sa.Connection, definition: ProcessDefinition) -> None:
    """Store the definition unless its hash is stored already (idempotent, race-free)."""
    exists = conn.execute(sa.select(sa.literal(1)).where(DEFINITIONS.c.hash == definition.hash)).first()
    if exists is None:
        conn.execute(pg_insert(DEFINITIONS).values(
            hash=definition.hash, process_id=definition.process_id, spec=definition.spec, bpmn=definition.bpmn)
            .on_conflict_do_nothing())


def spec_text(conn: sa.Connection, digest: str) -> str:
    return conn.execute(sa.select(DEFINITIONS.c.spec).where(DEFINITIONS.c.hash == digest)).scalar_one()
