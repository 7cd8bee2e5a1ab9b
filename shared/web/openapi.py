"""OpenAPI 3 documents built from the same marshmallow schemas that validate requests,
so the published contract cannot drift from the code."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

_SIMPLE = {
    fields.UUID: {"type": "string", "format": "uuid"},
    fields.AwareDateTime: {"type": "string", "format": "date-time"},
    fields.DateTime: {"type": "string", "format": "date-time"},
    fields.Date: {"type": "string", "format": "date"},
    fields.Email: {"type": "string", "format": "email"},
    fields.String: {"type": "string"},
    fields.Integer: {"type": "integer"},
    fields.Decimal: {"type": "number"},
    fields.Float: {"type": "number"},
    fields.Number: {"type": "number"},
    fields.Boolean: {"type": "boolean"},
    fields.Dict: {"type": "object"},
}


def field_schema(field: fields.Field) -> dict:
    if isinstance(field, fields.Nested):
        nested = field.nested() if callable(field.nested) and not isinstance(field.nested, type) else field.nested
        out = schema_to_json(nested if isinstance(nested, Schema) else nested())
    elif isinstance(field, fields.List):
        out = {"type": "array", "items": field_schema(field.inner)}
    else:
        out = next((dict(v) for k, v in _SIMPLE.items() if isinstance(field, k)), {})
    validators = field.validators if hasattr(field, "validators") else []
    for v in validators:
        if isinstance(v, validate.OneOf):
            out["enum"] = list(v.choices)
        elif isinstance(v, validate.Length):
            key = ("minItems", "maxItems") if out.get("type") == "array" else ("minLength", "maxLength")
            if v.min is not None:
                out[key[0]] = v.min
            if v.max is not None:
                out[key[1]] = v.max
        elif isinstance(v, validate.Range):
            if v.min is not None:
                out["minimum"] = v.min
            if v.max is not None:
                out["maximum"] = v.max
    if field.allow_none:
        out = {"anyOf": [out, {"type": "null"}]}
    if field.metadata.get("description"):
        out["description"] = field.metadata["description"]
    return out


def schema_to_json(schema: Schema) -> dict:
    props, required = {}, []
    for name, field in schema.fields.items():
        if field.load_only and field.dump_only:
            continue
        key = field.data_key or name
        props[key] = field_schema(field)
        if field.required:
            required.append(key)
    out = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "fields": {"type": "object", "description": "each wrong field and what is wrong with it"}}}},
}


def document(title: str, version: str, paths: dict) -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}},
            "schemas": {"Error": ERROR},
        },
        "paths": paths,
    }


def operation(summary: str, *, request: Schema | None = None, response: Schema | dict | None = None,
              status: int = 200, public: bool = False, parameters: list | None = None,
              errors: tuple[int, ...] = (400, 401, 403, 404)) -> dict:
    op: dict = {"summary": summary, "responses": {}}
    if not public:
        op["security"] = [{"bearer": []}]
    if parameters:
        op["parameters"] = parameters
    if request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema_to_json(request)}}}
    body = schema_to_json(response) if isinstance(response, Schema) else (response or {"type": "object"})
    op["responses"][str(status)] = {"description": "OK", "content": {"application/json": {"schema": body}}}
    for code in errors:
        op["responses"][str(code)] = {"description": "error",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return op


def query_parameters(schema: Schema) -> list[dict]:
    """The query parameters a schema accepts, named as the client sends them."""
    return [{"name": field.data_key or name, "in": "query", "required": field.required,
             "schema": field_schema(field)} for name, field in schema.fields.items()]


def operations_paths() -> dict:
    """What shared.web.operations.Operations serves on every service, documented alike."""
    return {
        "/health/ready": {"get": operation(
            "Readiness: ok or degraded (200); down or not_ready (503) with the reasons", public=True, errors=(503,))},
        "/health": {"get": operation("The older name of /health/ready, same answer", public=True, errors=(503,))},
        "/metrics": {"get": {"summary": "Prometheus metrics of this replica (sum across replicas)",
                             "responses": {"200": {"description": "text"}}}},
        "/metrics/shared": {"get": {"summary": "Prometheus gauges of shared state (outbox, notifications, "
                                               "parked events): scrape once per service, not per replica",
                                    "responses": {"200": {"description": "text"}}}},
        "/openapi.json": {"get": operation("This document", public=True, errors=())},
    }
