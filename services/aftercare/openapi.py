"""Aftercare's OpenAPI document, from the schemas that validate its requests."""
from services.aftercare import schemas
from shared.web.openapi import document, operation, operations_paths, query_parameters

_VISIT = [{"name": "visit_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]


def _optional_body(op: dict) -> dict:
    """An operation whose JSON body may be left out altogether."""
    op["requestBody"]["required"] = False
    return op


DOCUMENT = document("Closeloop aftercare", "1", {
    "/v1/visits": {
        "get": operation("The agent's queue: open visits due by due_before (default now) in the caller's scope, "
                         "allergy checks first, then by when they are next called; with unclaimed=true, without the "
                         "visits a colleague's claim holds now", response=schemas.VisitPage(),
                         parameters=query_parameters(schemas.VisitQuery()), errors=(400, 401, 403)),
    },
    "/v1/visits/{visit_id}": {
        "get": operation("One visit: the sale or case it follows and its attempts; with contact=true and a purpose, "
                         "the customer's contact read from intake now for the agent working it (intake logs the "
                         "read with the purpose; without intake within 3 s, contact_unavailable says why). Without "
                         "contact=true intake is not asked", response=schemas.VisitDetailOut(),
                         parameters=_VISIT + query_parameters(schemas.VisitReadQuery()), errors=(400, 401, 403, 404)),
    },
    "/v1/visits/{visit_id}/claim": {
        "post": _optional_body(operation(
            "Claim the visit: the caller works it now, for minutes (1-60; without a body, the chain policy's "
            "aftercare.claim_for, 10 minutes), so colleagues' next (GET /v1/visits?unclaimed=true) passes it by. "
            "The caller's own claim is extended; a colleague's running claim answers 409 with code claimed, "
            "naming them (claimed_by, claimed_until beside the message); of agents claiming at once exactly one "
            "wins. The caller's attempt ends the claim, as does the visit finishing. Answers the visit with "
            "claimed_by and claimed_until", request=schemas.ClaimIn(), response=schemas.VisitDetailOut(),
            parameters=_VISIT, errors=(400, 401, 403, 404, 409, 413, 415))),
        "delete": operation("Release the caller's claim on the visit (none running: nothing changes); a colleague's "
                            "running claim is theirs to release (409, code claimed). Answers the visit",
                            response=schemas.VisitDetailOut(), parameters=_VISIT, errors=(401, 403, 404, 409)),
    },
    "/v1/visits/{visit_id}/attempts": {
        "post": operation("Record a call: reached (with the questionnaire's answers), not reached, or a call back "
                          "asked for; ends any claim on the visit; answers the visit", request=schemas.AttemptIn(),
                          response=schemas.VisitDetailOut(), parameters=_VISIT,
                          errors=(400, 401, 403, 404, 409, 413, 415, 422)),
    },
    **operations_paths(),
})
