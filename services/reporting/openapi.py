"""Reporting's OpenAPI document, from the schemas that validate its queries."""
from services.reporting import schemas
from shared.web.openapi import document, operation, operations_paths, query_parameters

_FILE = {"200": {"description": "the file, streamed"}}

DOCUMENT = document("Closeloop reporting", "1", {
    "/v1/kpis": {
        "get": operation("The chain's KPIs for a period (default the last 30 days, today included), in the caller's "
                         "scope, totals and grouped by branch, region, category, technician, handler, day, week or "
                         "month", parameters=query_parameters(schemas.KpiQuery()), errors=(400, 401, 403)),
    },
    "/v1/alerts": {
        "get": operation("Open alerts (recurring problems, product safety signals) about branches in the caller's "
                         "scope, and the cases breaching their SLA now by branch",
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
