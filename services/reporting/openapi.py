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

_NUM, _BOOL = {"type": "number"}, {"type": "boolean"}
_NULLABLE = lambda schema: {**schema, "nullable": True}  # noqa: E731
_LIST = lambda props: {"type": "array", "items": {"type": "object", "properties": props}}  # noqa: E731
_CUSTOMER_REF = [{"name": "customer_ref", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^c_[0-9a-f]{32}$"},
                  "description": "the keyed hash of the customer's contact intake's look-up gives"}]
_CUSTOMER = {"type": "object", "properties": {
    "customer_ref": _TEXT,
    "customer_masked": {"type": "object", "properties": {"name": _NULLABLE(_TEXT), "phone": _NULLABLE(_TEXT)},
                        "description": "the newest known, as intake masked it"},
    "contact_consent": _NULLABLE({**_BOOL, "description": "the newest sale's"}),
    "summary": {"type": "object", "properties": {
        "complaints": _INT, "inquiries": _INT, "open_cases": _INT, "sales": _INT, "visits": _INT,
        "last_visit_score": _NULLABLE(_INT), "last_visit_at": _NULLABLE(_TIME),
        "allergies": {**_LIST({"at": _TIME, "batch": _NULLABLE(_TEXT), "sku": _NULLABLE(_TEXT),
                               "source": {"type": "string", "enum": ["complaint", "visit"]}, "record_id": _TEXT}),
                      "description": "the newest 200, newest first"}}},
    "satisfaction": {**_LIST({"at": _TIME, "score": _INT, "kind": {"type": "string", "enum": ["return", "follow_up"]},
                              "visit_id": _NULLABLE(_TEXT), "case_id": _NULLABLE(_TEXT)}),
                     "description": "the scores given, oldest first: the newest 200"},
    "cases": {**_LIST({"case_id": _TEXT, "reference": _TEXT, "kind": _TEXT, "branch_code": _TEXT, "category": _TEXT,
                       "priority": _TEXT, "severity_flags": {"type": "array", "items": _TEXT}, "received_at": _TIME,
                       "state": _TEXT, "outcome": _NULLABLE(_TEXT), "closed_at": _NULLABLE(_TIME),
                       "responsibility": _NULLABLE(_TEXT),
                       "remedies": _LIST({"type": _TEXT, "amount": _NUM, "status": _TEXT,
                                          "promise": _NULLABLE(_TEXT)}),
                       "follow_up_score": _NULLABLE(_INT), "batches": {"type": "array", "items": _TEXT}}),
              "description": "newest first, 200 at most"},
    "sales": {**_LIST({"sale_id": _TEXT, "branch_code": _TEXT, "sold_at": _TIME, "contact_consent": _BOOL,
                       "items": _LIST({name: _NULLABLE(_TEXT) for name in (
                           "type", "sku", "code", "name", "product_type", "batch", "technician_id")})}),
              "description": "newest first, 200 at most"},
    "visits": {**_LIST({"visit_id": _TEXT, "kind": _TEXT, "branch_code": _TEXT, "due_at": _TIME, "status": _TEXT,
                        "finished_at": _NULLABLE(_TIME), "score": _NULLABLE(_INT), "answers": _NULLABLE({"type": "object"}),
                        "adverse_reaction": _BOOL, "sale_id": _NULLABLE(_TEXT), "case_id": _NULLABLE(_TEXT)}),
               "description": "newest first, 200 at most"},
    "more": {"type": "object", "properties": {"cases": _BOOL, "sales": _BOOL, "visits": _BOOL, "allergies": _BOOL,
                                              "satisfaction": _BOOL},
             "description": "a list (the summary's allergies too) holds 200 of more"}}}

_ANSWERS = {"type": "object", "properties": {
    "from": _TIME, "to": _TIME, "time_zone": _TEXT, "branches": _NULLABLE({"type": "array", "items": _TEXT}),
    "answers": _LIST({
        "standard_answer": {**_TEXT, "description": "the answer's id in the policy"},
        "purpose": {"type": "string", "enum": ["first_response", "written_result", "visit_follow_up", "inquiry"]},
        "used": {**_INT, "description": "first responses, written results (the newest of a case) and visits"},
        "followed_up": {**_INT, "description": "of those, cases with a follow-up score, or completed visits"},
        "mean_score": _NULLABLE(_NUM),
        "satisfied": _NULLABLE({**_NUM, "description": "% of those scores that are 4 or 5"})})}}

DOCUMENT = document("Closeloop reporting", "1", {
    "/v1/kpis": {
        "get": operation("The chain's KPIs for a period (default the last 30 days, today included), in the caller's "
                         "scope, totals and grouped by branch, region, category, technician, handler, day, week or "
                         "month", parameters=query_parameters(schemas.KpiQuery()), errors=(400, 401, 403)),
    },
    "/v1/kpis/standard-answers": {
        "get": operation("How often each standard answer (标准应答语) was used in the period (default the last 30 "
                         "days) in the caller's scope, per purpose, and the satisfaction that followed, most used "
                         "first", response=_ANSWERS, parameters=query_parameters(schemas.PeriodQuery()),
                         errors=(400, 401, 403)),
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
    "/v1/customers/{customer_ref}": {
        "get": {**operation("The customer file (客户档案): the customer's cases, sales and visits in the caller's "
                            "scope, newest first, with a summary, allergy reports and satisfaction over time; no "
                            "contact in clear", response=_CUSTOMER, errors=(400, 401, 403, 404)),
                "parameters": _CUSTOMER_REF},
    },
    "/v1/exports/case-library.csv": {
        "get": operation("The case library (training material): one row per complaint case closed in the period "
                         "(CSV, UTF-8 with BOM), streamed: what happened, root cause, responsibility, measures, "
                         "corrective action, remedies, outcome, follow-up score; nobody named, no contact, texts "
                         "scrubbed and inert against formulas", parameters=query_parameters(schemas.LibraryQuery()),
                         errors=(400, 401, 403)),
    },
    "/v1/exports/case-library.xlsx": {
        "get": operation("The case library as an Excel workbook", parameters=query_parameters(schemas.LibraryQuery()),
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
