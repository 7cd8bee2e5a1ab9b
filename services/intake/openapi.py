"""Intake's OpenAPI document, from the schemas that validate its requests."""
from shared.web.openapi import document, operation, operations_paths, query_parameters
from services.intake import schemas

_ID = [{"name": "complaint_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
_IDEMPOTENCY = [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "a retry with the same key returns the first answer"}]
_QUERY = query_parameters(schemas.ComplaintQuery())

DOCUMENT = document("Closeloop intake", "1", {
    "/v1/complaints": {
        "post": operation("Register a complaint, suggestion, praise or inquiry (咨询)", request=schemas.ComplaintIn(),
                          response=schemas.ComplaintOut(), status=201, parameters=_IDEMPOTENCY,
                          errors=(400, 401, 403, 409, 413, 415)),
        "get": operation("List complaints in the caller's scope", response=schemas.ComplaintPage(),
                         parameters=_QUERY, errors=(400, 401, 403)),
    },
    "/v1/complaints/{complaint_id}": {
        "get": operation("One complaint with its status", response=schemas.ComplaintOut(), parameters=_ID,
                         errors=(401, 403, 404)),
    },
    "/v1/complaints/{complaint_id}/convert": {
        "post": operation("Convert an inquiry that proves to be a complaint into one: triaged as a complaint, its "
                          "deadlines from the inquiry's receipt, registered again (complaint_registered, "
                          "converted_from inquiry). 409 not_an_inquiry (a complaint already, or converted: when), "
                          "409 closed (its case is closed)", request=schemas.ConvertIn(),
                          response=schemas.ComplaintOut(), parameters=_ID + _IDEMPOTENCY,
                          errors=(400, 401, 403, 404, 409, 413, 415, 422)),
    },
    "/v1/sales": {
        "post": operation("Record a sale (products and services)", request=schemas.SaleIn(),
                          response=schemas.SaleOut(), status=201, parameters=_IDEMPOTENCY,
                          errors=(400, 401, 403, 409, 413, 415)),
    },
    "/v1/customers/lookup": {
        "post": operation("Find a customer's complaints (where each stands) and sales by phone, in the caller's "
                          "scope, newest first; logged with the purpose", request=schemas.CustomerLookupIn(),
                          response=schemas.CustomerLookupOut(), errors=(400, 401, 403, 413, 415)),
    },
    "/health/live": {"get": operation(
        "Liveness: answered by the HTTP server itself, with no worker, database or broker", public=True,
        errors=())},
    **operations_paths(),
})
