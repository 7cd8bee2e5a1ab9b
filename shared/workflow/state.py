"""Specs and instance states as JSON text.

An instance's state leaves its spec out (the definition row holds it once per content hash)
and takes it back on restore, so saving after every step writes only the tasks. The state is
stored as TEXT, never JSONB: SpiffWorkflow restores each task's data as a delta on its parent's,
in the order the tasks come in the text, and JSONB reorders object keys, so a child restored
before its parent loses its data."""
from __future__ import annotations

import json
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.serializer.helpers.encoder import create_encoder
from SpiffWorkflow.bpmn.serializer.workflow import VERSION, BpmnWorkflowSerializer
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from shared.workflow import timers
from shared.workflow.errors import WorkflowError

VERSION_KEY = "serializer_version"


class ByReferenceConverter(BpmnWorkflowConverter):
    """SpiffWorkflow's own workflow converter without the specs."""

    def to_dict(self, workflow):
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def restore(self, dct, spec, subprocess_specs, script_engine) -> BpmnWorkflow:
        workflow = self.target_class(spec, subprocess_specs, deserializing=True)
        workflow.script_engine = script_engine  # a restored workflow otherwise runs SpiffWorkflow's default engine
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _registry():
    registry = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
    timers.register(registry)
    return registry


REGISTRY = _registry()  # specs
# States have a registry of their own, for good in encoder mode (values are converted lazily
# inside the JSON encoder, as SpiffWorkflow's serializer does), so no flag is ever switched
# while another thread converts a spec.
_STATE_REGISTRY = _registry()
_STATE_REGISTRY._encoder_mode = True
_STATES = ByReferenceConverter(BpmnWorkflow, _STATE_REGISTRY)
_ENCODER = create_encoder(_STATE_REGISTRY)


def spec_to_json(spec, subprocess_specs: dict) -> str:
    return json.dumps({"spec": REGISTRY.convert(spec), "subprocess_specs": {
        name: REGISTRY.convert(sub) for name, sub in subprocess_specs.items()}}, ensure_ascii=False)


def spec_from_json(text: str):
    """(spec, subprocess specs) with the engine's timer classes; one restored pair serves every
    instance of the definition (SpiffWorkflow keeps instance state in tasks, not in specs)."""
    dct = json.loads(text)
    return REGISTRY.restore(dct["spec"]), {name: REGISTRY.restore(sub) for name, sub in dct["subprocess_specs"].items()}


def dump(workflow: BpmnWorkflow) -> str:
    dct = _STATE_REGISTRY.convert(workflow)
    dct[VERSION_KEY] = VERSION
    return json.dumps(dct, cls=_ENCODER, ensure_ascii=False)


def load(text: str, spec, subprocess_specs: dict, script_engine) -> BpmnWorkflow:
    dct = json.loads(text)
    version = dct.pop(VERSION_KEY, None)
    if version != VERSION:
        raise WorkflowError(f"state written by serializer version {version}; this engine reads {VERSION} "
                            "(migrate stored states before upgrading SpiffWorkflow)")
    return _STATES.restore(dct, spec, subprocess_specs, script_engine)
