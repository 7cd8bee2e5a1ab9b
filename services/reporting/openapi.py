"""Reporting's OpenAPI document, from the schemas that validate its queries."""
from services.reporting import schemas
from shared.web.openapi import document, operation, operations_paths, query_parameters

_FILE = {"200": {"description": "the file, streamed"}}
_TEXT, _TIME, _INT = {"type": "string"}, {"type": "string", "format": "date-time"}, {"type": "integer"}
_ALERTS = {"type": "object", "properties": {
    "alerts": {"type": "array", "items": {"type": "object", "properties": {
        "alert_id": _TEXT, "kind": {"type": "string", "enum": ["recurring_problem", "safety_signal"]},
        "by": {"type": "string", "enum": ["branch_category", "technician", "batch"]}, "about": {"type": "object"},
        "count": {**_INT, "description": "its records in the caller's scope, all of them"},
        "records": {"type": "array", "items": _TEXT,
                    "description": "the case (or visit) ids, oldest first: the first 50 unless records=all"},
        "records_more": {"type": "boolean", "description": "count holds more records than listed"},
        "chain_count": {**_INT, "description": "a safety signal's reactions in the whole chain"},
        "branches": {"type": "array", "items": _TEXT}, "first_at": _TIME, "last_at": _TIME,
        "open": {"type": "boolean"}, "open_until": _TIME, "raised_at": _TIME}}},
    "breaching": {"type": "array", "items": {"type": "object", "properties": {
        "branch_code": _TEXT, "cases": _INT, "first_response": _INT, "resolution": _INT,
        "worst": {"type": "array", "description": "the 50 most overdue", "items": {"type": "object", "properties": {
            "case_id": _TEXT, "reference": _TEXT, "priority": _TEXT, "due": _TIME,
            "clock": {"type": "string", "enum": ["first_response", "resolution"]}}}}}}},
    "as_of": _TIME}}

DOCUMENT = document("Closeloop reporting", "1", {
    "/v1/kpis": {
        "get": operation("The chain's KPIs for a period (default the last 30 days, today included), in the caller's "
                         "scope, totals and grouped by branch, region, category, technician, handler, day, week or "
                         "month", parameters=query_parameters(schemas.KpiQuery()), errors=(400, 401, 403)),
    },
    "/v1/alerts": {
        "get": operation("Open alerts (recurring problems, product safety signals) about branches in the caller's "
                         "scope, each with its count and first 50 records (records=all: every one), and the cases "
                         "breaching their SLA now by branch", response=_ALERTS,
                         parameters=query_parameters(schemas.AlertQuery()), errors=(400, 401, 403)),
    },
    "/v1/exports/cases.csv": {
        "get": operation("One row per case with its KPIs (CSV, UTF-8 with BOM), streamed; contact data masked",
                         parameters=query_parameters(schemas.ExportQuery()), errors=(400, 401, 403)),
    },
    "/v1/exports/cases.xlsx": {
        "get": operation("The same rows as an Excel workbook", parameters=query_parameters(schemas.ExportQuery()),
                         errors=(400, 401, 403)),
    },
    "/v1/access-log": {
        "get": operation("The archive access log (查阅登记): who read which closed case, when and why; auditors "
                         "and HQ admins", parameters=query_parameters(schemas.AccessLogQuery()),
                         errors=(400, 401, 403)),
    },
    "/dashboard": {
        "get": {"summary": "HQ's dashboard page (public; its script calls the API with the token in the URL's "
                           "#fragment)", "responses": {"200": {"description": "HTML"}}},
    },
    **operations_paths(),
})
