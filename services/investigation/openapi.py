"""Investigation's OpenAPI document, from the schemas that validate its requests."""
from services.investigation import schemas
from shared.web.openapi import document, operation, operations_paths, query_parameters, schema_to_json

_CASE = [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
_TASK = _CASE + [{"name": "task", "in": "path", "required": True, "schema": {
    "type": "string", "enum": sorted(schemas.TASK_BODIES)}, "description": "a task the case waits on (open_tasks)"}]


# The body is the named task's: one schema per task.
_TASK_BODY = {"oneOf": [{"title": name, **schema_to_json(schema)} for name, schema in sorted(schemas.TASK_BODIES.items())]}
_TASK_OP = operation("Complete a task the case waits on, with its data; answers the case", response=schemas.CaseOut(),
                     parameters=_TASK, errors=(400, 401, 403, 404, 409, 413, 415, 422))
_TASK_OP["requestBody"] = {"required": True, "content": {"application/json": {"schema": _TASK_BODY}}}

DOCUMENT = document("Closeloop investigation", "1", {
    "/v1/cases": {
        "get": operation("Cases in the caller's scope, newest first", response=schemas.CasePage(),
                         parameters=query_parameters(schemas.CaseQuery()), errors=(400, 401, 403)),
    },
    "/v1/cases/{case_id}": {
        "get": operation("One case: state, open tasks, SLA clocks, timeline", response=schemas.CaseOut(),
                         parameters=_CASE, errors=(401, 403, 404)),
    },
    "/v1/cases/{case_id}/tasks/{task}": {
        "post": _TASK_OP,
    },
    "/v1/cases/{case_id}/pause": {
        "post": operation("Wait for the customer: the case's clocks stand still", request=schemas.PauseIn(),
                          response=schemas.CaseOut(), parameters=_CASE, errors=(400, 401, 403, 404, 409, 422)),
    },
    "/v1/cases/{case_id}/resume": {
        "post": operation("The customer is back: the clocks run on, deadlines later by the pause",
                          request=schemas.ResumeIn(), response=schemas.CaseOut(), parameters=_CASE,
                          errors=(400, 401, 403, 404, 409)),
    },
    "/v1/cases/{case_id}/contact": {
        "get": operation("The customer's contact, on request, for the staff member working the case (investigator, "
                         "store, regional or HQ manager, in scope; not a closed case: the archive's): intake is asked "
                         "with the caller's identity and the purpose, and logs the read; nothing is kept here. 503 "
                         "when intake does not answer within 3 s", response=schemas.CaseContactOut(),
                         parameters=_CASE + query_parameters(schemas.ContactQuery()),
                         errors=(400, 401, 403, 404, 409, 503)),
    },
    "/v1/archive/cases/{case_id}": {
        "get": operation("A closed case's whole record with the customer's contact (from intake), for HQ and "
                         "auditors; the read is logged with its purpose (archive_accessed)",
                         response=schemas.ArchiveOut(), parameters=_CASE + query_parameters(schemas.ArchiveQuery()),
                         errors=(400, 401, 403, 404, 409)),
    },
    "/v1/cases/{case_id}/legal-hold": {
        "put": operation("Hold the case (HQ admin): its personal data is kept past the retention until released",
                         request=schemas.LegalHoldIn(), response=schemas.LegalHoldOut(), parameters=_CASE,
                         errors=(400, 401, 403, 404, 409)),
        "delete": operation("Release the case's legal hold (HQ admin): the retention counts again",
                            response=schemas.LegalHoldOut(), parameters=_CASE, errors=(401, 403, 404)),
    },
    "/v1/tasks": {
        "get": operation("Waiting tasks the caller may complete, soonest deadline first",
                         response=schemas.TaskPage(), parameters=query_parameters(schemas.TaskQuery()),
                         errors=(400, 401, 403)),
    },
    "/v1/standard-answers": {
        "get": operation("The chain's standard answers (标准应答语) of a category, purpose and language, ranked by how "
                         "many complaints of their category were received in the last 90 days in the caller's scope "
                         "(`complaints`, most first; ties by the category's order in the policy, then id); with "
                         "`case_id` (a case in scope) each is also `filled` with the case's facts: masked name, "
                         "branch name, reference, deadlines in the branch's local time",
                         response=schemas.StandardAnswerList(),
                         parameters=query_parameters(schemas.StandardAnswerQuery()), errors=(400, 401, 403, 404)),
    },
    # -- staff notices for the console --
    "/v1/notifications": {
        "get": operation("The staff notices (escalations, approvals waiting, SLA warnings) addressed to the caller's "
                         "role about cases in its scope, newest first; `kind` names what happened",
                         response=schemas.NoticePage(), parameters=query_parameters(schemas.NoticeQuery()),
                         errors=(400, 401)),
    },
    **operations_paths(),
})
