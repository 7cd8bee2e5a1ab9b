"""Aftercare's OpenAPI document, from the schemas that validate its requests."""
from services.aftercare import schemas
from shared.web.openapi import document, operation, operations_paths, query_parameters

_VISIT = [{"name": "visit_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]

DOCUMENT = document("Closeloop aftercare", "1", {
    "/v1/visits": {
        "get": operation("The agent's queue: open visits due by due_before (default now) in the caller's scope, "
                         "allergy checks first, then by when they are next called", response=schemas.VisitPage(),
                         parameters=query_parameters(schemas.VisitQuery()), errors=(400, 401, 403)),
    },
    "/v1/visits/{visit_id}": {
        "get": operation("One visit: the sale or case it follows and its attempts; with contact=true and a purpose, "
                         "the customer's contact read from intake now for the agent working it (intake logs the "
                         "read with the purpose; without intake within 3 s, contact_unavailable says why). Without "
                         "contact=true intake is not asked", response=schemas.VisitDetailOut(),
                         parameters=_VISIT + query_parameters(schemas.VisitReadQuery()), errors=(400, 401, 403, 404)),
    },
    "/v1/visits/{visit_id}/attempts": {
        "post": operation("Record a call: reached (with the questionnaire's answers), not reached, or a call back "
                          "asked for; answers the visit", request=schemas.AttemptIn(),
                          response=schemas.VisitDetailOut(), parameters=_VISIT,
                          errors=(400, 401, 403, 404, 409, 413, 415, 422)),
    },
    **operations_paths(),
})
