"""Valid sample requests and events for tests and benchmarks."""
import copy
import uuid
from datetime import datetime, timezone

from shared.messaging.envelope import build_event


def complaint_event(description: str = "毛巾很脏，没有消毒") -> dict:
    """A complaint_registered event as intake would publish it."""
    complaint_id = str(uuid.uuid4())
    payload = {
        "complaint_id": complaint_id, "reference": "SH001-20261122-0001", "kind": "complaint",
        "channel": "front_desk", "category": "hygiene_environment", "category_source": "automatic",
        "priority": "general", "severity_flags": [], "description": description, "occurred_at": None,
        "received_at": "2026-11-22T02:00:00Z", "region": "east", "service": None, "products": [],
        "customer_ref": None, "customer_masked": {"name": "王**"}, "customer_language": "zh",
        "first_response_due": "2026-11-23T02:00:00Z", "resolution_due": "2026-11-29T02:00:00Z"}
    return build_event("complaint_registered", payload, branch_code="SH001", correlation_id=complaint_id, sequence=1,
                       occurred_at=datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))


# DESIGN.md's example: a front desk posts an allergy after a hair dye.
COMPLAINT_REQUEST = {
    "kind": "complaint", "channel": "front_desk",
    "customer": {"name": "王女士", "phone": "13812346138", "language": "zh"},
    "description": "昨天染发后头皮过敏红肿", "occurred_at": "2026-11-21T15:00:00+08:00",
    "category": None, "severity_flags": ["allergy"],
    "service": {"code": "HAIR-DYE", "name": "染发", "technician_id": "T-017"},
    "products": [{"sku": "DYE-5N", "batch": "B2026-11-03"}],
}


def complaint_request(**changes) -> dict:
    """A copy of the example complaint with some fields replaced."""
    body = copy.deepcopy(COMPLAINT_REQUEST)
    body.update(changes)
    return body


def policy_for_load(directory: str | None = None) -> str:
    """A copy of the bundled policy with intake's message limits out of reach, for load runs
    (benchmarks, the compose test) that post far faster than any till: the limits still run,
    so each complaint costs what a real one does. Returns the file's path."""
    import os
    import tempfile

    from services.intake.policy import MAX_LIMIT_MESSAGES
    from shared.calendar.policy import DEFAULT_POLICY_PATH, yaml_doc, yaml_text

    doc = yaml_doc(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    # The most the check allows: a burst of a million, then over 16,000 a second.
    limit = {"messages": MAX_LIMIT_MESSAGES, "per": "PT1M"}
    doc["intake"]["customer_messages"].update(per_poster=limit, per_recipient=limit)
    fd, path = tempfile.mkstemp(prefix="closeloop-load-policy-", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(yaml_text(doc))
    os.chmod(path, 0o644)  # read by the containers' user too
    return path


def edited_policy(directory, name: str, edit) -> str:
    """A copy of the bundled policy, named `name` in `directory`, as `edit(doc)` changed its
    YAML document, in the file's order (the branches' order says which come first). Returns the
    file's path."""
    from pathlib import Path

    from shared.calendar.policy import DEFAULT_POLICY_PATH, yaml_doc, yaml_text

    doc = yaml_doc(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    edit(doc)
    path = Path(directory) / name
    path.write_text(yaml_text(doc), encoding="utf-8")
    return str(path)


def policy_without_branch(directory, code: str) -> str:
    """A copy of the bundled policy without branch `code` (a branch the chain closed): records
    of it stay in the services' databases. Returns the file's path."""
    return edited_policy(directory, f"policy-without-{code}.yaml", lambda doc: doc["branches"].pop(code))
