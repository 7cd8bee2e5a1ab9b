"""Reporting under load (issue 11), for the step `reporting` of `python -m bench.run`:

- ingest: the events one `closeloop serve reporting` process logs and folds a second through
  the real bus. A plausible chain's last 30 days (1,000 branches in 20 regions): complaint
  cases registered, opened, assigned, acknowledged, investigated, remedied, resolved, followed
  up and closed, suggestions and praise, sales of services and products and their return
  visits, all built with build_event (so they pass parse_event) and published in time order,
  persistent, onto `intake.events`, `investigation.events` and `aftercare.events` (routing key:
  the type) before the process starts, on a vhost of the bench's own where only reporting's
  handlers are declared; the process then drains its three queues (`@handle_all`, batches of
  CLOSELOOP_EVENT_BATCH) until its event_log holds them all: events a second from its first
  logged event, the CPU of the process and of its PostgreSQL backends per 1,000 events, for
  each batch size asked (each on a fresh database and freshly published events).
- kpis: queries.kpis with 1,000,000 cases over 1,000 branches and two years (loaded with COPY
  into case_facts, their facts a plausible fold, with their remedies, 4 sale items a case and
  the visits of both: the indexes made again after it, refresh_rollups(engine) if reporting has
  it, VACUUM (ANALYZE)): every grouping (and none) for HQ (every branch), a region (50 branches)
  and one branch, over the default period (the last 30 days) and a year: p50 / p95 / max, and
  EXPLAIN (ANALYZE, BUFFERS) of each statement of the slowest.
- export: `GET /v1/exports/cases.csv` of a `closeloop serve reporting` process on the same
  million cases, with an hq_analyst token, over a period holding them all: rows a second, the
  process's peak RSS (VmHWM) and its RSS sampled while it streams; the CSV checked (its header,
  one line a case, every field). Then `cases.xlsx` of about 100,000 rows (a fresh process):
  time and peak RSS, for information.

By hand (DATABASE_URL's server and AMQP_URI's broker, else the local defaults; a database
`closeloop_bench_reporting` and a vhost `closeloop-bench-reporting` of its own, both dropped at
the end):

    python -m bench.reporting ingest [--events 50000] [--batches 250,100,500] [--timeout 300] [--preload 0]
    python -m bench.reporting kpis [--cases 1000000] [--runs 30] [--budget 10]
    python -m bench.reporting export [--cases 1000000] [--xlsx-rows 100000]
    python -m bench.reporting reads [...]   kpis then export on one load (what bench.run runs)

`--json` prints the figures as JSON (what bench.run reads) instead of a summary.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, time as day_time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import kombu
import sqlalchemy as sa

from bench import storage
from shared.calendar.clock import isoformat
from shared.messaging.envelope import build_event
from shared.persistence import db
from shared.runtime import config as settings

# Two runs on one broker at once (an ingest and an export) each need their own: CLOSELOOP_BENCH_VHOST.
VHOST = os.environ.get("CLOSELOOP_BENCH_VHOST", "closeloop-bench-reporting")
ZONE = ZoneInfo("Asia/Shanghai")
BRANCHES, REGIONS = 1000, 20
CATEGORIES = ("service_quality", "product_quality", "hygiene_environment", "booking", "staff_attitude", "pricing",
              "safety")
CHANNELS = ("front_desk", "phone", "wechat", "app", "hotline")
RESPONSIBILITIES = ("ours", "ours", "ours", "customer_misuse", "third_party", "unfounded")
SERVICES = (("S-HC-01", "染发", "hair_colour"), ("S-PM-02", "烫发", "perm"), ("S-CT-03", "剪发", "haircut"),
            ("S-CR-04", "头皮护理", "scalp_care"))
PRODUCTS = (("SK-1001", "保湿精华", "skincare"), ("DYE-5N", "染发剂 5N", "hair_colour"), ("SH-2002", "洗发水", "hair_care"))
REVISITED = {"hair_colour", "perm", "skincare"}  # items aftercare plans a return visit for
BATCHES_PER_SKU = 40
NAMES = ("王**", "李**", "张**", "刘**", "陈**", "杨**")


def database_url(env=os.environ) -> str:
    return settings.service_database_url("reporting", env)


def fresh_database(env=os.environ) -> str:
    """closeloop_bench_reporting (with the bench's prefix), dropped, created and migrated."""
    from bench.run import fresh_database

    return fresh_database("reporting", env)


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --- the chain ---------------------------------------------------------------------------------------

def chain(branches: int = BRANCHES, regions: int = REGIONS) -> dict[str, str]:
    """branch code -> region: B0001..B1000 in regions R01..R20 (50 branches each)."""
    return {f"B{i:04d}": f"R{i % regions + 1:02d}" for i in range(1, branches + 1)}


def chain_policy(regions_of: dict[str, str], directory: str | None = None) -> str:
    """The bundled policy with the chain's branches instead of the demo chain's (and intake's
    message limits out of reach, as shared.testing.samples.policy_for_load): its path."""
    import yaml

    from shared.testing.samples import policy_for_load

    path = policy_for_load(directory)
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    doc["branches"] = {code: {"name": f"门店 {code}", "region": region, "opening_hours": "10:00-22:00"}
                       for code, region in regions_of.items()}
    Path(path).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _technician(rng: random.Random, branch: str) -> str:
    return f"T-{branch}-{rng.randrange(1, 9)}"


def _batch(rng: random.Random, sku: str) -> str:
    return f"{sku}-L{rng.randrange(BATCHES_PER_SKU):03d}"


# --- a case's life, as a plan: its events (ingest) and its folded facts (kpis) ----------------------

def case_plan(rng: random.Random, branch: str, region: str, received: datetime, now: datetime, n: int) -> dict:
    """What happens to one case received at `received`, up to `now` (nothing later): a
    complaint (80%), suggestion or praise, worked more or less well. Times are None for what
    has not happened (yet)."""
    kind = rng.choices(("complaint", "suggestion", "praise"), (8, 1, 1))[0]
    priority = "low" if kind != "complaint" else rng.choices(("urgent", "general"), (1, 6))[0]
    hours = {"urgent": (1, 24), "general": (24, 168), "low": (72, 336)}[priority]
    case_id = _uuid(rng)
    service = SERVICES[rng.randrange(len(SERVICES))] if rng.random() < 0.8 else None
    product = PRODUCTS[rng.randrange(len(PRODUCTS))] if kind == "complaint" and rng.random() < 0.3 else None
    p = {"case_id": case_id, "branch": branch, "region": region, "kind": kind, "priority": priority,
         "reference": f"{branch}-{received.astimezone(ZONE):%Y%m%d}-{n % 10000:04d}",
         "category": CATEGORIES[rng.randrange(len(CATEGORIES))] if kind == "complaint" else kind,
         "channel": CHANNELS[rng.randrange(len(CHANNELS))], "received": received,
         "first_due": received + timedelta(hours=hours[0]), "resolution_due": received + timedelta(hours=hours[1]),
         "service": service, "technician": _technician(rng, branch) if service else None,
         "product": product and (product[0], product[1], _batch(rng, product[0])),
         "customer_ref": f"c-{case_id[:8]}",
         "customer": {"name": NAMES[rng.randrange(len(NAMES))], "phone": f"138****{rng.randrange(10000):04d}",
                      "email": None},
         "owner": None, "ack": None, "escalated": 0, "findings": None, "corrective": None, "remedies": [],
         "resolved": None, "follow_up": None, "reopened": None, "resolved_again": None, "closed": None,
         "decision": None}
    t = received + timedelta(minutes=rng.randrange(1, 30))
    if t > now or rng.random() < 0.05:
        return p
    p["owner"] = (f"M-{branch}-{rng.randrange(1, 4)}", t)
    span = hours[0] * 60
    late = rng.random() < 0.12
    t += timedelta(minutes=rng.randrange(span, 3 * span) if late else rng.randrange(5, span))
    if t > now or rng.random() < 0.05:
        return p
    p["ack"] = t
    if t > p["first_due"]:
        p["escalated"] = 1 if rng.random() < 0.8 else 2
    if kind == "suggestion":
        t += timedelta(days=rng.randrange(1, 10))
        if t <= now and rng.random() < 0.85:
            p["decision"] = (rng.choice(("adopted", "declined")), t)
            p["closed"] = (t, p["decision"][0])
        return p
    if kind == "praise":
        t += timedelta(hours=rng.randrange(1, 48))
        if t <= now:
            p["closed"] = (t, "passed_on")
        return p
    t += timedelta(hours=rng.randrange(1, 72))
    if t > now or rng.random() < 0.1:
        return p
    p["findings"] = (RESPONSIBILITIES[rng.randrange(len(RESPONSIBILITIES))], t)
    if p["findings"][0] == "ours" and rng.random() < 0.3:
        done = t + timedelta(days=rng.randrange(2, 20))
        p["corrective"] = {"opened": t, "due": t + timedelta(days=14), "owner": p["owner"][0],
                           "done": done if done <= now and rng.random() < 0.7 else None}
    if p["findings"][0] == "ours" or rng.random() < 0.3:
        for _ in range(1 if rng.random() < 0.9 else 2):
            amount = float(rng.choice((0, 50, 100, 200, 300, 500, 800, 1200, 3000, 6000)))
            remedy = {"remedy_id": _uuid(rng), "amount": amount, "proposed": t,
                      "type": rng.choice(("apology", "redo_service", "refund", "partial_refund", "gift", "voucher")),
                      "approval": "approved" if amount <= 500 else "awaiting_approval", "decided": None,
                      "promise": None, "fulfilled": None}
            decided = t + timedelta(hours=rng.randrange(1, 24))
            if decided <= now:
                remedy["decided"] = ("rejected" if rng.random() < 0.05 else "approved", decided)
            if remedy["decided"] and remedy["decided"][0] == "approved":
                if rng.random() < 0.15:  # a promise, kept or broken
                    remedy["promise"] = decided + timedelta(days=3)
                done = decided + timedelta(hours=rng.randrange(1, 96))
                if done <= now:
                    remedy["fulfilled"] = (done, None if remedy["promise"] is None else
                                           "kept" if done <= remedy["promise"] else "broken")
            p["remedies"].append(remedy)
    t += timedelta(hours=rng.randrange(2, 200))
    if t > now or rng.random() < 0.1:
        return p
    p["resolved"] = t
    due = t + timedelta(days=2, hours=rng.randrange(0, 24))
    if due - timedelta(days=2) > now:
        return p
    attempted = due + timedelta(minutes=rng.randrange(1, 240))
    visit = p["follow_up"] = {"visit_id": _uuid(rng), "due": due, "attempted": attempted if attempted <= now else None,
                              "score": None, "abandoned": None}
    if visit["attempted"] is None:
        return p
    if rng.random() < 0.2:
        abandoned = attempted + timedelta(days=2)
        if abandoned <= now:
            visit["abandoned"] = abandoned
            p["closed"] = (abandoned, "no_feedback")
        return p
    visit["score"] = rng.choices((1, 2, 3, 4, 5), (4, 6, 15, 35, 40))[0]
    if visit["score"] <= 2 and rng.random() < 0.5:
        p["reopened"] = attempted
        again = attempted + timedelta(hours=rng.randrange(4, 96))
        if again <= now:
            p["resolved_again"] = again
            p["closed"] = (again, "resolved_after_reopening")
        return p
    p["closed"] = (attempted, "satisfied" if visit["score"] >= 3 else "unsatisfied")
    return p


def case_events(p: dict) -> list[tuple[str, str, dict, datetime, int]]:
    """The plan's events: (source, type, payload, occurred_at, sequence), each producer's own
    sequence (intake's 1, investigation's per case in time order, aftercare's per visit)."""
    ids = {"case_id": p["case_id"], "complaint_id": p["case_id"], "actor": None, "actor_role": None}
    staff = {**ids, "actor": p["owner"][0] if p["owner"] else None, "actor_role": "store_manager"}
    described = {"kind": p["kind"], "reference": p["reference"], "category": p["category"],
                 "priority": p["priority"], "severity_flags": [], "region": p["region"],
                 "customer_ref": p["customer_ref"], "received_at": isoformat(p["received"]),
                 "first_response_due": isoformat(p["first_due"]), "resolution_due": isoformat(p["resolution_due"])}
    service = p["service"] and {"code": p["service"][0], "name": p["service"][1], "technician_id": p["technician"]}
    products = [{"sku": p["product"][0], "name": p["product"][1], "batch": p["product"][2]}] if p["product"] else []
    registered = {"complaint_id": p["case_id"], **described, "channel": p["channel"], "category_source": "manual",
                  "description": "染发后头皮发红，店员态度也不好", "occurred_at": None, "service": service,
                  "products": products, "customer_masked": p["customer"], "customer_language": "zh"}
    out = [("intake", "complaint_registered" if p["kind"] == "complaint" else "feedback_registered", registered,
            p["received"], 1)]
    case = [("case_opened", {**ids, **described, "process": "complaint_case:3f2a9c"}, p["received"])]
    if p["owner"]:
        case.append(("case_assigned", {**ids, "owner": p["owner"][0]}, p["owner"][1]))
    if p["ack"]:
        case.append(("case_acknowledged", {**staff, "channel": "phone", "within_sla": p["ack"] <= p["first_due"]},
                     p["ack"]))
    if p["escalated"]:
        case.append(("sla_breached", {**ids, "clock": "first_response", "due": isoformat(p["first_due"]),
                                      "level": 1}, p["first_due"]))
        for level in range(1, p["escalated"] + 1):
            case.append(("case_escalated", {**ids, "level": level, "to_role": ("regional_manager", "hq_admin")[
                level - 1], "to_region": p["region"], "clock": "first_response"},
                p["first_due"] + (level - 1) * (p["ack"] - p["first_due"]) / 2))
    if p["decision"]:
        case.append(("suggestion_decided", {**staff, "decision": p["decision"][0]}, p["decision"][1]))
    if p["kind"] == "praise" and p["closed"]:
        case.append(("praise_passed_on", {**staff, "to": [p["technician"] or "staff"]}, p["closed"][0]))
    if p["findings"]:
        at = p["findings"][1]
        case.append(("findings_recorded", {**staff, "root_cause": "操作未按流程做皮试", "responsibility": p["findings"][0],
                                           "signed_by": staff["actor"], "signed_at": isoformat(at)}, at))
    if p["corrective"]:
        c = p["corrective"]
        opened = {**staff, "action": "全员复训皮试流程", "owner": c["owner"], "due": isoformat(c["due"])}
        case.append(("corrective_action_opened", opened, c["opened"]))
        if c["done"]:
            case.append(("corrective_action_closed", {**opened, "done_at": isoformat(c["done"]),
                                                      "on_time": c["done"] <= c["due"]}, c["done"]))
    for r in p["remedies"]:
        base = {**staff, "remedy_id": r["remedy_id"], "type": r["type"], "amount": r["amount"], "currency": "CNY"}
        case.append(("remedy_proposed", {**base, "status": r["approval"]}, r["proposed"]))
        if r["decided"] and r["decided"][0] == "rejected":
            case.append(("remedy_rejected", {**base, "reason": "超出标准"}, r["decided"][1]))
        elif r["decided"]:
            case.append(("remedy_approved", {**base, "within_authority": r["approval"] == "approved"}, r["decided"][1]))
            if r["promise"]:
                case.append(("promise_made", {**base, "deadline": isoformat(r["promise"])}, r["decided"][1]))
            if r["fulfilled"]:
                done, promise = r["fulfilled"]
                case.append(("remedy_fulfilled", {**base, "fulfilled_at": isoformat(done), "promise": promise}, done))
    if p["resolved"]:
        case.append(("case_resolved", _resolved(p, staff, p["resolved"], 0), p["resolved"]))
    visit = p["follow_up"]
    if p["reopened"]:
        case.append(("case_reopened", {**ids, "escalation_level": 2, "reopened": 1, "visit_id": visit["visit_id"],
                                       "score": visit["score"], "reason": "回访不满意"}, p["reopened"]))
    if p["resolved_again"]:
        case.append(("case_resolved", _resolved(p, staff, p["resolved_again"], 1), p["resolved_again"]))
    if p["closed"]:
        case.append(("case_closed", {**ids, "outcome": p["closed"][1], "corrective_action": None if not p["corrective"]
                                     else "done" if p["corrective"]["done"] else "open"}, p["closed"][0]))
    case.sort(key=lambda e: e[2])
    out += [("investigation", kind, payload, at, n) for n, (kind, payload, at) in enumerate(case, 1)]
    if visit:
        v = {"visit_id": visit["visit_id"], "kind": "follow_up", "case_id": p["case_id"], "sale_id": None,
             "customer_ref": p["customer_ref"]}
        finished = visit["attempted"] if visit["score"] is not None else visit["abandoned"]
        out += _visit_events(v, visit["due"] - timedelta(days=2), visit["due"], visit["attempted"], finished,
                             visit["score"], {"satisfaction": visit["score"], "suggestions": None,
                                              "resolved": (visit["score"] or 0) >= 3})
    return out


def _visit_events(v: dict, scheduled: datetime, due: datetime, attempted, finished, score, answers: dict) -> list:
    """A visit's events: scheduled, a first call, then completed (a score) or abandoned."""
    out = [("aftercare", "visit_scheduled", {**v, "due_at": isoformat(due)}, scheduled, 1)]
    if attempted:
        reached = score is not None
        out.append(("aftercare", "visit_attempted", {**v, "channel": "phone", "attempt": 1, "reached": reached,
                                                     "outcome": "reached" if reached else "not_reached"}, attempted, 2))
    if finished and score is not None:
        out.append(("aftercare", "visit_completed", {**v, "score": score, "answers": answers}, finished, 3))
    elif finished:
        out.append(("aftercare", "visit_abandoned", {**v, "attempts": 3, "reason": "no answer"}, finished, 3))
    return out


def _resolved(p: dict, staff: dict, at: datetime, reopened: int) -> dict:
    return {**staff, "reference": p["reference"], "resolved_at": isoformat(at), "within_sla": at <= p["resolution_due"],
            "customer_ref": p["customer_ref"], "customer_language": "zh", "record_type": "complaint",
            "record_id": p["case_id"], "responsibility": p["findings"] and p["findings"][0], "reopened": reopened}


def case_facts(p: dict) -> dict:
    """The plan's case as services/reporting/facts.py folds its events (`_check_facts` holds
    the two to each other on a sample)."""
    from services.reporting.facts import new_case

    f = new_case(p["case_id"])
    remedies = {}
    for r in p["remedies"]:
        item = {"stage": 1, "promise": None, "type": r["type"], "amount": r["amount"], "status": r["approval"]}
        if r["decided"]:
            item.update(stage=2, status=r["decided"][0])
        if r["promise"]:
            item.update(stage=3, deadline=isoformat(r["promise"]))
        if r["fulfilled"]:
            item.update(stage=4, status="fulfilled", promise=r["fulfilled"][1])
        remedies[r["remedy_id"]] = item
    resolved = p["resolved_again"] or p["resolved"]
    state = ("closed" if p["closed"] else "resolved" if p["resolved_again"] else "reopened" if p["reopened"] else
             "resolved" if resolved else "investigated" if p["findings"] else "acknowledged" if p["ack"] else
             "assigned" if p["owner"] else "open")
    c, visit, ack = p["corrective"], p["follow_up"], p["ack"]
    scored = visit is not None and visit["score"] is not None
    f.update(branch_code=p["branch"], kind=p["kind"], reference=p["reference"], category=p["category"],
             priority=p["priority"], channel=p["channel"], region=p["region"], customer_ref=p["customer_ref"],
             technician_id=p["technician"], service_code=p["service"] and p["service"][0],
             customer_masked=p["customer"], batches=[p["product"][2]] if p["product"] else [],
             received_at=isoformat(p["received"]), first_response_due=isoformat(p["first_due"]),
             resolution_due=isoformat(p["resolution_due"]), opened_at=isoformat(p["received"]),
             owner=p["owner"] and p["owner"][0], first_response_at=ack and isoformat(ack),
             first_response_within_sla=None if not ack else ack <= p["first_due"],
             breaches={"first_response": 1} if p["escalated"] else {},
             escalation_level=max(p["escalated"], 2 if p["reopened"] else 0),
             responsibility=p["findings"] and p["findings"][0], remedies=remedies,
             resolved_at=resolved and isoformat(resolved),
             resolved_within_sla=None if not resolved else resolved <= p["resolution_due"],
             reopened=1 if p["reopened"] else 0, closed_at=p["closed"] and isoformat(p["closed"][0]),
             outcome=p["closed"] and p["closed"][1], decision=p["decision"] and p["decision"][0],
             corrective_action=c and {"due": isoformat(c["due"]), "owner": c["owner"],
                                      **({"done_at": isoformat(c["done"]), "on_time": c["done"] <= c["due"]}
                                         if c["done"] else {})},
             follow_up_score=visit["score"] if scored else None,
             follow_up_at=isoformat(visit["attempted"]) if scored else None,
             state=state, described_by="intake", sequences={"state": 6, "owner": 2, "responsibility": 4})
    return f


# --- sales and their return visits ------------------------------------------------------------------

def sale_plan(rng: random.Random, branch: str, region: str, sold: datetime, now: datetime) -> dict:
    """A sale of one to three items (services with their technician, products with their
    batch) and, for hair colour, perm or skincare, a return visit three days later."""
    items = []
    for _ in range(rng.choices((1, 2, 3), (5, 3, 1))[0]):
        if rng.random() < 0.7:
            code, name, product_type = SERVICES[rng.randrange(len(SERVICES))]
            items.append({"type": "service", "code": code, "name": name, "product_type": product_type,
                          "technician_id": _technician(rng, branch), "batch": None})
        else:
            sku, name, product_type = PRODUCTS[rng.randrange(len(PRODUCTS))]
            items.append({"type": "product", "sku": sku, "name": name, "product_type": product_type,
                          "batch": _batch(rng, sku)})
    sale_id = _uuid(rng)
    p = {"sale_id": sale_id, "branch": branch, "region": region, "sold": sold, "items": items, "visit": None}
    revisit = next((i for i in items if i["product_type"] in REVISITED), None)
    due = sold + timedelta(days=3)
    if revisit is None or rng.random() < 0.2:
        return p
    attempted = due + timedelta(minutes=rng.randrange(1, 300))
    visit = p["visit"] = {"visit_id": _uuid(rng), "due": due, "attempted": attempted if attempted <= now else None,
                          "score": None, "finished": None, "item": revisit, "adverse": False}
    if visit["attempted"] is None:
        return p
    finished = attempted + timedelta(days=rng.choice((0, 0, 0, 1, 2)))
    if finished > now:
        return p
    if rng.random() < 0.8:
        visit.update(score=rng.choices((1, 2, 3, 4, 5), (2, 3, 10, 35, 50))[0], finished=finished,
                     adverse=rng.random() < 0.005)
    else:
        visit["finished"] = finished  # abandoned
    return p


def sale_events(p: dict) -> list[tuple[str, str, dict, datetime, int]]:
    items = [{k: v for k, v in i.items() if v is not None} for i in p["items"]]
    ref = f"c-{p['sale_id'][:8]}"
    out = [("intake", "sale_recorded", {"sale_id": p["sale_id"], "sold_at": isoformat(p["sold"]),
                                        "recorded_at": isoformat(p["sold"]), "region": p["region"], "customer_ref": ref,
                                        "customer_masked": {"name": "王**", "phone": "138****6138", "email": None},
                                        "contact_consent": True, "items": items, "customer_language": "zh"},
            p["sold"], 1)]
    visit = p["visit"]
    if visit is None:
        return out
    v = {"visit_id": visit["visit_id"], "kind": "return", "case_id": None, "sale_id": p["sale_id"], "customer_ref": ref}
    score, finished = visit["score"], visit["finished"]
    out += _visit_events(v, p["sold"], visit["due"], visit["attempted"], finished, score,
                         {"met_expectations": (score or 0) >= 3, "discomfort": visit["adverse"], "satisfaction": score,
                          "suggestions": None})
    if visit["adverse"]:
        item = visit["item"]
        out.append(("aftercare", "adverse_reaction_reported", {
            **v, "technician_id": item.get("technician_id"),
            "product": {"sku": item.get("sku") or item.get("code"), "name": item["name"],
                        "product_type": item["product_type"], "batch": item.get("batch")},
            "description": "头皮红肿", "severity_flags": ["allergy"], "reported_at": isoformat(finished),
            "customer_masked": {"name": "王**"}, "customer_language": "zh"}, finished, 4))
    return out


# --- ingest: through the bus, one process ------------------------------------------------------------

def chain_events(count: int, now: datetime, regions_of: dict[str, str], days: int = 30, seed: int = 11,
                 sales_per_case: int = 4) -> tuple[list[tuple[str, str, str, str]], dict]:
    """`count` envelopes of the chain's last `days` days (nothing after `now`), in the order
    they happened, as Publisher.publish_batch takes them; and what they are, by type."""
    rng = random.Random(seed)
    codes = sorted(regions_of)
    span = days * 86400
    start = now - timedelta(days=days)
    raw: list[tuple[str, str, dict, datetime, int, str, str]] = []
    n = 0
    while len(raw) < count * 1.15:  # events after `now` are left out, the latest ones cut
        n += 1
        branch = codes[rng.randrange(len(codes))]
        at = start + timedelta(seconds=rng.randrange(span))
        if n % (sales_per_case + 1):
            p = sale_plan(rng, branch, regions_of[branch], at, now)
            raw += [(*e, branch, p["sale_id"]) for e in sale_events(p)]
        else:
            p = case_plan(rng, branch, regions_of[branch], at, now, n)
            raw += [(*e, branch, p["case_id"]) for e in case_events(p)]
    raw = sorted((e for e in raw if e[3] <= now), key=lambda e: e[3])[:count]
    messages, kinds = [], {}
    for source, kind, payload, at, sequence, branch, correlation in raw:
        event = build_event(kind, payload, branch_code=branch, correlation_id=correlation, occurred_at=at,
                            sequence=sequence, source=source)
        messages.append((f"{source}.events", kind, json.dumps(event, ensure_ascii=False), event["event_id"]))
        kinds[f"{source}.{kind}"] = kinds.get(f"{source}.{kind}", 0) + 1
    return messages, dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def reporting_handlers():
    from shared.messaging import consumer, topology
    from shared.runtime.config import service_class

    return consumer.handlers_of(service_class("reporting"), topology.retry_delays())


def bench_vhost(env) -> tuple[object, str]:
    """(infra, AMQP URI) of a fresh vhost of the bench's own on the broker AMQP_URI names."""
    from shared.testing import infra

    resolved = infra.resolve(env)
    try:
        infra.delete_vhost(resolved, VHOST)
    except Exception:
        pass  # none left by an earlier run
    return resolved, infra.create_vhost(resolved, VHOST)


def drop_vhost(resolved) -> None:
    from shared.testing import infra

    try:
        infra.delete_vhost(resolved, VHOST)
    except Exception:
        pass


def service_env(env, amqp: str, policy_file: str, **more) -> dict:
    """The environment of a `closeloop serve reporting` on the bench's database and vhost."""
    from bench.run import free_port

    return {**env, "AMQP_URI": amqp, "CLOSELOOP_DB_PREFIX": env.get("CLOSELOOP_DB_PREFIX", "closeloop_bench"),
            "CLOSELOOP_DEV_KEYS": "1", "CLOSELOOP_POLICY_FILE": policy_file,
            "REPORTING_BIND": f"127.0.0.1:{free_port()}", "LOG_LEVEL": "WARNING", **more}


def _postgres_backends(conn) -> list[int]:
    """The local server's backends working on this database, but this connection's."""
    from bench.run import pids_named

    pids = set(conn.execute(sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )).scalars())
    return sorted(pids & set(pids_named("postgres")))


def ingest_run(env, amqp: str, policy_file: str, messages: list, batch: int, work: Path,
               timeout: float = 300, preload: tuple | None = None) -> dict:
    """One process draining `messages` (published first) with batches of `batch`; on a
    database holding the cases load_chain loads first when `preload` is (now, regions, cases)."""
    from bench.run import Processes, cpu_by_pid
    from shared.messaging import dead_letters
    from shared.messaging.relay import Publisher

    url = fresh_database(env)
    if preload:
        load_chain(url, *preload)
    handlers = reporting_handlers()
    with kombu.Connection(amqp) as conn:
        for handler in handlers:
            for queue in (handler.queue(), *handler.side_queues()):
                queue(conn.channel()).purge()
    publisher = Publisher(amqp)
    started = time.perf_counter()
    try:
        for i in range(0, len(messages), 1000):
            publisher.publish_batch(messages[i:i + 1000])
    finally:
        publisher.close()
    published_s = time.perf_counter() - started
    queued = sum(dead_letters.queue_depths(amqp, [h.queue_name for h in handlers]).values())
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    counter = engine.connect().execution_options(isolation_level="AUTOCOMMIT")  # one connection, polled

    def logged() -> int:
        return counter.execute(sa.text("SELECT count(*) FROM event_log")).scalar()

    total = len(messages)
    procs = Processes(service_env(env, amqp, policy_file, CLOSELOOP_EVENT_BATCH=str(batch)))
    service_log = work / f"reporting-{batch}.log"
    try:
        launched = time.perf_counter()
        service = procs.start("-m", "shared.cli", "serve", "reporting", log=service_log)
        deadline = time.monotonic() + 60
        first = logged()
        while first == 0:
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"reporting logged no event: {service_log.read_text()[-2000:]}")
            time.sleep(0.02)
            first = logged()
        began = time.perf_counter()
        backends = _postgres_backends(counter)
        cpu_before = cpu_by_pid([service.pid, *backends])
        done, deadline = first, time.monotonic() + timeout
        while done < total and time.monotonic() < deadline and service.poll() is None:
            time.sleep(0.1)
            done = logged()
        ended = time.perf_counter()
        backends = sorted(set(backends) | set(_postgres_backends(counter)))  # opened meanwhile: all their CPU
        cpu_after = cpu_by_pid([service.pid, *backends])
        shape = dict(counter.execute(sa.text(
            "SELECT (SELECT count(*) FROM case_facts) AS cases, (SELECT count(*) FROM visit_facts) AS visits, "
            "(SELECT count(*) FROM sale_items) AS sale_items, (SELECT count(*) FROM case_remedies) AS remedies, "
            "(SELECT count(*) FROM alerts) AS alerts, (SELECT count(*) FROM outbox) AS alert_events")).one()._mapping)
    finally:
        procs.stop()
        counter.close()
        engine.dispose()
        db.drop_database(url)
    side = [q.name for h in handlers for q in h.side_queues()]
    failed = sum(max(depth, 0) for depth in dead_letters.queue_depths(amqp, side).values())
    elapsed = ended - began
    events = done - first

    def per_1000(pids) -> float | None:
        used = sum(cpu_after[p] - cpu_before.get(p, 0.0) for p in pids if p in cpu_after)
        return round(1000 * used / events, 3) if events else None

    return {"batch": batch, "events": total, "queued": queued, "logged": done, "first_logged": first,
            "seconds": round(elapsed, 2), "per_s": round(events / elapsed, 1) if elapsed else None,
            "from_start_s": round(ended - launched, 2), "publish_per_s": round(total / published_s, 1),
            "cpu_s_per_1000": per_1000([service.pid]), "postgres_cpu_s_per_1000": per_1000(backends),
            "backends": len(backends), "failed_events": failed, "complete": done >= total, **shape}


def measure_ingest(env, events: int = 50_000, batches=(500, 250, 100), timeout: float = 300,
                   preload: int = 0) -> dict:
    now = datetime.now(timezone.utc)
    regions_of = chain()
    started = time.perf_counter()
    messages, kinds = chain_events(events, now, regions_of)
    built = time.perf_counter() - started
    resolved, amqp = bench_vhost(env)
    with tempfile.TemporaryDirectory() as tmp:
        policy_file = chain_policy(regions_of, tmp)
        try:
            from shared.messaging import topology

            topology.declare(amqp, reporting_handlers())
            runs = {str(b): ingest_run(env, amqp, policy_file, messages, b, Path(tmp), timeout,
                                       (now, regions_of, preload) if preload else None) for b in batches}
        finally:
            drop_vhost(resolved)
    return {"events": len(messages), "branches": len(regions_of), "build_s": round(built, 1), "kinds": kinds,
            "preloaded_cases": preload, "code": code_state(),
            "default_batch": batches[0], "runs": runs}


# --- the million cases ---------------------------------------------------------------------------------

CASE_COLUMNS = ("case_id", "branch_code", "region", "kind", "category", "priority", "channel", "technician_id",
                "state", "received_at", "first_response_at", "first_response_due", "resolved_at", "resolution_due",
                "closed_at", "escalation_level", "reopened", "outcome", "follow_up_score", "owner", "corrective_due",
                "corrective_done_at", "corrective_on_time", "decision", "first_bucket", "resolution_bucket", "facts",
                "updated_at")
REMEDY_COLUMNS = ("case_id", "remedy_id", "type", "amount", "status", "promise")
VISIT_COLUMNS = ("visit_id", "branch_code", "kind", "status", "due_at", "finished_at", "attempts", "reached", "score",
                 "suggestions", "adverse_reaction", "facts", "updated_at")
SALE_COLUMNS = ("sale_id", "line", "branch_code", "sold_at", "type", "product_type", "technician_id", "batch")


def _copy_value(value) -> str:
    """COPY's text format of a value that is not a string."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False).replace("\\", "\\\\")
    return str(value)


def _line(values) -> str:
    return "\t".join(v if type(v) is str else _copy_value(v) for v in values) + "\n"


def _case_lines(p: dict, stamp: str) -> tuple[str, list[str], str | None]:
    """The case's case_facts line, its remedies' lines, its follow-up's visit_facts line."""
    from services.reporting.repository import CaseFacts

    f = case_facts(p)
    columns = CaseFacts.columns(None, f)
    line = _line([p["case_id"], *(columns[c] for c in CASE_COLUMNS[1:-2]), f, stamp])
    remedies = [_line((p["case_id"], rid, r["type"], r["amount"], r["status"], r["promise"]))
                for rid, r in f["remedies"].items()]
    visit = p["follow_up"]
    visit_line = None
    if visit:
        status = ("completed" if visit["score"] is not None else "abandoned" if visit["abandoned"] else
                  "in_progress" if visit["attempted"] else "scheduled")
        finished = visit["attempted"] if status == "completed" else visit["abandoned"]
        visit_line = _visit_line(visit["visit_id"], p["branch"], "follow_up", status, visit["due"], finished,
                                 {"scheduled": 0, "abandoned": 3}.get(status, 1), visit["score"], False, p["case_id"],
                                 None, stamp)
    return line, remedies, visit_line


def _visit_line(visit_id, branch, kind, status, due, finished, attempts, score, adverse, case_id, sale_id,
                stamp) -> str:
    facts = {"visit_id": visit_id, "branch_code": branch, "kind": kind, "sale_id": sale_id, "case_id": case_id,
             "due_at": isoformat(due), "status": status, "attempts": attempts, "reached": score is not None,
             "score": score, "finished_at": finished and isoformat(finished), "suggestions": False,
             "discomfort": adverse, "adverse_reaction": adverse, "sequences": {"status": attempts + 1}}
    return _line((visit_id, branch, kind, status, due, finished, attempts, score is not None, score, False, adverse,
                  facts, stamp))


def _sale_lines(p: dict, stamp: str) -> tuple[list[str], str | None]:
    items = [_line((p["sale_id"], n, p["branch"], p["sold"], i["type"], i["product_type"], i.get("technician_id"),
                    i.get("batch"))) for n, i in enumerate(p["items"])]
    v = p["visit"]
    if v is None:
        return items, None
    status = ("completed" if v["score"] is not None else "abandoned" if v["finished"] else
              "in_progress" if v["attempted"] else "scheduled")
    return items, _visit_line(v["visit_id"], p["branch"], "return", status, v["due"], v["finished"],
                              {"scheduled": 0, "abandoned": 3}.get(status, 1), v["score"], v["adverse"], None,
                              p["sale_id"], stamp)


def load_chain(url: str, now: datetime, regions_of: dict[str, str], cases: int = 1_000_000, days: int = 730,
               sales_per_case: int = 2, seed: int = 12, chunk: int = 50_000) -> dict:
    """`cases` cases received over `days` days before `now` across the chain's branches, and
    `sales_per_case` sales a case (1.6 items each: about 3.2 sale items a case) with their
    return visits, in the order they came (as a live chain's rows are written: a table's pages
    follow time), loaded with COPY (the secondary indexes dropped meanwhile and made again as
    the migrations define them); then refresh_rollups(engine) when reporting has it, VACUUM
    (ANALYZE) and a CHECKPOINT."""
    from services.reporting import repository

    rng = random.Random(seed)
    codes = sorted(regions_of)
    span = days * 86400
    start = now - timedelta(days=days)
    stamp = isoformat(now)
    tables = ("case_facts", "case_remedies", "visit_facts", "sale_items")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    started = time.perf_counter()
    counts = dict.fromkeys(tables, 0)
    try:
        with engine.begin() as conn:
            indexes = storage.drop_indexes(conn, tables)
            cursor = conn.connection.dbapi_connection.cursor()
            buffers = {t: [] for t in tables}

            def flush(force=False):
                for table, lines in buffers.items():
                    if lines and (force or len(lines) >= chunk):
                        columns = {"case_facts": CASE_COLUMNS, "case_remedies": REMEDY_COLUMNS,
                                   "visit_facts": VISIT_COLUMNS, "sale_items": SALE_COLUMNS}[table]
                        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN",
                                           io.StringIO("".join(lines)))
                        counts[table] += len(lines)
                        lines.clear()

            at = lambda n: start + timedelta(seconds=span * (n + rng.random()) / cases)  # noqa: E731 in time order
            for n in range(cases):
                branch = codes[rng.randrange(len(codes))]
                p = case_plan(rng, branch, regions_of[branch], at(n), now, n)
                line, remedies, visit = _case_lines(p, stamp)
                buffers["case_facts"].append(line)
                buffers["case_remedies"] += remedies
                if visit:
                    buffers["visit_facts"].append(visit)
                for _ in range(sales_per_case):
                    branch = codes[rng.randrange(len(codes))]
                    s = sale_plan(rng, branch, regions_of[branch], at(n), now)
                    items, visit = _sale_lines(s, stamp)
                    buffers["sale_items"] += items
                    if visit:
                        buffers["visit_facts"].append(visit)
                if n % 10_000 == 9_999:
                    flush()
            flush(force=True)
            copied = time.perf_counter() - started
            storage.remake_indexes(conn, indexes)
        indexed = time.perf_counter() - started
        refresh = getattr(repository, "refresh_rollups", None)
        if refresh is not None:
            refresh(engine, str(ZONE), now)
        rolled = time.perf_counter() - started
        sizes = storage.settle(engine, tables)
    finally:
        engine.dispose()
    return {"rows": counts, "copy_s": round(copied, 1), "index_s": round(indexed - copied, 1),
            "rollups": refresh is not None, "rollups_s": round(rolled - indexed, 1) if refresh else None,
            "load_s": round(time.perf_counter() - started, 1), "sizes": sizes, "indexes": [n for n, _ in indexes]}


def _check_facts(now: datetime, regions_of: dict[str, str], samples: int = 300, seed: int = 13) -> int:
    """The loaded facts are what reporting's fold makes of the same case's events: checked on a
    sample (facts.apply over case_events), the columns KPIs read compared. Mismatches."""
    from services.reporting import facts as folding
    from services.reporting.repository import CaseFacts

    rng = random.Random(seed)
    codes = sorted(regions_of)
    wrong = 0
    for n in range(samples):
        branch = codes[rng.randrange(len(codes))]
        p = case_plan(rng, branch, regions_of[branch], now - timedelta(seconds=rng.randrange(60 * 86400)), now, n)
        folded = folding.new_case(p["case_id"])
        for source, kind, payload, at, sequence in sorted(case_events(p), key=lambda e: e[3]):
            folded = folding.apply(folded, {"source": source, "type": kind, "payload": payload,
                                            "occurred_at": isoformat(at), "sequence": sequence,
                                            "branch_code": branch})
        mine, theirs = CaseFacts.columns(None, case_facts(p)), CaseFacts.columns(None, folded)
        remedies = lambda f: {k: (r["type"], r["status"], r.get("promise")) for k, r in f["remedies"].items()}  # noqa
        if mine != theirs or remedies(case_facts(p)) != remedies(folded):
            wrong += 1
    return wrong


# --- kpis ------------------------------------------------------------------------------------------------

def periods(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The API's default period (the last 30 days, today included) and a year ending today."""
    today = now.astimezone(ZONE).date()
    hi = datetime.combine(today + timedelta(days=1), day_time(), ZONE)
    return {"30d": (hi - timedelta(days=30), hi), "1y": (hi - timedelta(days=365), hi)}


def scopes(regions_of: dict[str, str]) -> dict[str, frozenset[str] | None]:
    first = sorted(regions_of)[0]
    return {"hq": None, "region": frozenset(c for c, r in regions_of.items() if r == regions_of[first]),
            "branch": frozenset({first})}


def _cut(line: str, most: int = 400) -> str:
    """A plan's line, its CASE of every branch's region (a thousand WHENs) cut short."""
    return line if len(line) <= most else f"{line[:most]}... ({len(line):,} characters)"


def _p95(times: list[float]) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]


def measure_kpis(url: str, now: datetime, regions_of: dict[str, str], runs: int = 30, budget: float = 10) -> dict:
    """queries.kpis for each scope, period and grouping: one call not counted, then `runs`
    calls, or fewer when they pass `budget` seconds (3 at least; 1 when the first call took a
    third of it). Then, for the slowest, the slowest of one branch's and HQ's default view (the
    last 30 days, no grouping): EXPLAIN (ANALYZE, BUFFERS) of each statement, and the calls
    again with PostgreSQL's JIT compilation off."""
    from services.reporting import queries

    engine = db.make_engine(url, 2)
    statements: list[tuple[str, dict]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    def timed(conn, scope, group_by, least: int) -> tuple[list[float], list[float]]:
        times, cpu = [], []
        began = time.perf_counter()
        while len(times) < runs and (len(times) < least or time.perf_counter() - began < budget):
            started, used = time.perf_counter(), time.process_time()
            queries.kpis(conn, scope, group_by, now)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
        return times, cpu

    results, shapes, calls = {}, {}, {}
    try:
        with engine.connect() as conn:
            for scope_name, branches in scopes(regions_of).items():
                for period_name, (lo, hi) in periods(now).items():
                    scope = queries.Scope(lo, hi, branches, regions_of, str(ZONE))
                    for group_by in (None, *queries.GROUPINGS):
                        name = f"{scope_name}/{period_name}/{group_by or 'none'}"
                        statements.clear()
                        started = time.perf_counter()
                        groups = queries.kpis(conn, scope, group_by, now)  # not counted
                        first = time.perf_counter() - started
                        shapes[name], calls[name] = list(statements), (scope, group_by)
                        times, cpu = timed(conn, scope, group_by, 3 if first < budget / 3 else 1)
                        results[name] = {"scope": scope_name, "period": period_name, "group_by": group_by,
                                         "runs": len(times), "first_ms": _ms(first),
                                         "p50_ms": _ms(statistics.median(times)), "p95_ms": _ms(_p95(times)),
                                         "max_ms": _ms(max(times)), "cpu_p50_ms": _ms(statistics.median(cpu)),
                                         "groups": len(groups)}
                        print(f"[bench.reporting] kpis {name}: p95 {results[name]['p95_ms']} ms over {len(times)} runs",
                              file=sys.stderr, flush=True)
            worst = lambda names: max(names, key=lambda n: results[n]["p95_ms"])  # noqa: E731
            looked = {"slowest": worst(results), "slowest_branch": worst(n for n in results if n.startswith("branch/")),
                      "hq_default": "hq/30d/none"}
            explained, jit_off = {}, {}
            for why, name in looked.items():
                explained[why] = {"call": name, "statements": _explain(conn, shapes[name])}
                scope, group_by = calls[name]
                least = 3 if results[name]["p50_ms"] < 1000 * budget / 3 else 1
                on, _ = timed(conn, scope, group_by, least)  # again, beside the same calls without JIT
                conn.execute(sa.text("SET jit = off"))
                off, _ = timed(conn, scope, group_by, least)
                conn.execute(sa.text("RESET jit"))
                jit_off[name] = {"runs": len(off), "p50_ms": _ms(statistics.median(off)), "p95_ms": _ms(_p95(off)),
                                 "with_jit_p50_ms": _ms(statistics.median(on))}
            conn.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
        engine.dispose()
    return {"queries": results, "runs": runs, "budget_s": budget, "slowest": looked["slowest"],
            "explain": explained, "jit_off": jit_off}


def _explain(conn, statements: list[tuple[str, dict]]) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement (as psycopg2 was given it): which table,
    its time, its JIT compilation's, and its plan."""
    raw = conn.connection.dbapi_connection.cursor()
    found = []
    try:
        for sql, params in statements:
            raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plan = [_cut(row[0]) for row in raw.fetchall()]
            figure = lambda label: next((float(line.split(label)[1].split()[0]) for line in plan  # noqa: E731
                                         if label in line), None)
            table = re.search(r"FROM (\w+)", sql)
            found.append({"statement": (table.group(1) if table else sql.split("(")[0][:40])
                          + (", by kind, category, priority and channel" if "by_kind" in sql else "")
                          + (", remedies" if "case_remedies" in sql else ""),
                          "execution_ms": figure("Execution Time:"), "jit_ms": figure("Total "), "plan": plan})
    finally:
        raw.close()
    return found


# --- export --------------------------------------------------------------------------------------------

def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """VmRSS of a process every `every` seconds, with the bytes received by then."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.received = pid, every, [], 0
        self._stop_event, self._began = threading.Event(), time.perf_counter()

    def run(self):
        while not self._stop_event.is_set():
            try:
                self.samples.append((time.perf_counter() - self._began, self.received, _rss_kb(self.pid)))
            except OSError:
                return
            self._stop_event.wait(self.every)

    def stop(self) -> list:
        self._stop_event.set()
        self.join()
        return self.samples


def _get(port: int, path: str, token: str, out, sampler: RssSampler | None) -> dict:
    """Stream a GET into `out`: status, bytes, seconds to the first byte and to the last."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    first, received = None, 0
    while True:
        chunk = response.read(256 * 1024)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - started
        received += len(chunk)
        if sampler is not None:
            sampler.received = received
        out.write(chunk)
    elapsed = time.perf_counter() - started
    conn.close()
    return {"status": response.status, "content_type": response.getheader("Content-Type"), "bytes": received,
            "first_byte_s": round(first or elapsed, 3), "seconds": round(elapsed, 2)}


def _check_csv(path: Path, expected_rows: int) -> dict:
    """The header is the export's columns after a BOM; every row has every field, one a case."""
    from services.reporting.exports import COLUMNS

    problems, rows, ids, previous = [], 0, set(), ""
    with open(path, encoding="utf-8", newline="") as f:
        if f.read(1) != "\ufeff":
            problems.append("no byte-order mark")
            f.seek(0)
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != COLUMNS:
            problems.append(f"header {header!r}")
        received = COLUMNS.index("received_at")
        for row in reader:
            rows += 1
            if len(row) != len(COLUMNS):
                problems.append(f"row {rows}: {len(row)} fields") if len(problems) < 10 else None
                continue
            ids.add(row[0])
            if row[received] < previous[:len(row[received])] and len(problems) < 10:
                problems.append(f"row {rows}: received_at {row[received]} before {previous}")
            previous = row[received]
    if rows != expected_rows:
        problems.append(f"{rows} rows, {expected_rows} cases in the period")
    if len(ids) != rows:
        problems.append(f"{rows - len(ids)} case ids twice")
    return {"rows": rows, "header_ok": tuple(header or ()) == COLUMNS, "distinct_cases": len(ids),
            "problems": problems}


def _check_xlsx(path: Path) -> dict:
    from openpyxl import load_workbook

    from services.reporting.exports import COLUMNS

    book = load_workbook(path, read_only=True)
    rows = book["cases"].iter_rows(values_only=True)
    header = next(rows, None)
    count = sum(1 for _ in rows)
    book.close()
    return {"rows": count, "header_ok": tuple(header or ()) == COLUMNS}


def _logged_errors(log: Path) -> list[str]:
    """`SomeError: what` lines of the exceptions a service logged (JSON lines)."""
    found = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found += re.findall(r"^\w+(?:Error|Exception): .+$", record.get("exception") or "", re.M)
    return found


def _export_once(env, amqp, policy_file, kind: str, lo, hi, expected: int, work: Path, url: str, **more) -> dict:
    """A fresh `closeloop serve reporting` (`more`: more of its environment), one export over
    [lo, hi] (dates), its figures."""
    from bench.run import Processes, cpu_by_pid, cpu_seconds, wait_http
    from shared.security import auth

    token = auth.issue_token(role="hq_analyst", subject="bench", branch="*")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    senv = service_env(env, amqp, policy_file, **more)
    port = int(senv["REPORTING_BIND"].rsplit(":", 1)[1])
    procs = Processes(senv)
    target = work / f"cases.{kind}"
    try:
        service = procs.start("-m", "shared.cli", "serve", "reporting", log=work / f"reporting-{kind}.log")
        wait_http(f"http://127.0.0.1:{port}/health")
        idle_kb, cpu = _rss_kb(service.pid), cpu_seconds(service.pid)
        backends = cpu_by_pid(_postgres_backends(watcher))
        sampler = RssSampler(service.pid)
        sampler.start()
        with open(target, "wb") as out:
            got = _get(port, f"/v1/exports/cases.{kind}?from={lo}&to={hi}", token, out, sampler)
        samples = sampler.stop()
        cpu = cpu_seconds(service.pid) - cpu
        # Its backends' CPU: those opened meanwhile (the stream's own connection), all of theirs.
        backends_cpu = sum(after - backends.get(pid, 0.0)
                           for pid, after in cpu_by_pid(_postgres_backends(watcher)).items())
        peak_kb = _rss_kb(service.pid, "VmHWM")
        after_kb = _rss_kb(service.pid)
    finally:
        procs.stop()
        watcher.close()
        engine.dispose()
    if got["status"] != 200:  # what failed, from the service's log: a figure of the step, not its end
        errors = _logged_errors(work / f"reporting-{kind}.log")
        return {**got, "rows": 0, "expected_rows": expected, "error": errors[0] if errors else target.read_text()[:300],
                "peak_rss_mb": round(peak_kb / 1024, 1)}
    check = _check_csv(target, expected) if kind == "csv" else _check_xlsx(target)
    target.unlink()
    rows = check["rows"]
    # RSS as the body went out: at each tenth of the bytes (growth with the rows is a leak).
    marks = []
    for tenth in range(1, 11):
        sample = next((s for s in samples if s[1] >= got["bytes"] * tenth / 10), samples[-1] if samples else None)
        if sample:
            marks.append(round(sample[2] / 1024, 1))
    return {**got, "rows": rows, "expected_rows": expected, "rows_per_s": round(rows / got["seconds"], 1),
            "idle_rss_mb": round(idle_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "max_sampled_rss_mb": round(max((s[2] for s in samples), default=0) / 1024, 1),
            "rss_after_mb": round(after_kb / 1024, 1), "rss_by_tenth_mb": marks,
            "cpu_s": round(cpu, 2), "cpu_ms_per_1000_rows": round(1e6 * cpu / rows, 1) if rows else None,
            "postgres_cpu_ms_per_1000_rows": round(1e6 * backends_cpu / rows, 1) if rows else None,
            "check": check}


def _export_plan(url: str, lo: datetime, hi: datetime, regions_of) -> list[str]:
    """EXPLAIN of the CSV export's statement as its COPY plans it (for all its rows, JIT off as
    the export sets it): index order, no sort of every row before the first."""
    from services.reporting import exports, queries

    sql, params = exports._query(queries.Scope(lo, hi, None, regions_of, str(ZONE)), {}, for_csv=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT set_config('jit', 'off', true)"))
            plan = [_cut(line) for line in conn.execute(sa.text("EXPLAIN " + sql), params).scalars()]
            conn.rollback()
    finally:
        engine.dispose()
    return plan


def measure_export(env, url: str, now: datetime, regions_of: dict[str, str], xlsx_rows: int = 100_000) -> dict:
    """The CSV of every case (a period of every day loaded), then an XLSX of about `xlsx_rows`."""
    today = now.astimezone(ZONE).date()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            total = conn.execute(sa.text("SELECT count(*) FROM case_facts")).scalar()
            oldest = conn.execute(sa.text("SELECT min(received_at) FROM case_facts")).scalar()
            lo = oldest.astimezone(ZONE).date()
            days = max(1, round((today - lo).days * xlsx_rows / max(total, 1)))
            xlsx_lo = today - timedelta(days=days - 1)
            xlsx_expected = conn.execute(sa.text("SELECT count(*) FROM case_facts WHERE received_at >= :lo"),
                                         {"lo": datetime.combine(xlsx_lo, day_time(), ZONE)}).scalar()
    finally:
        engine.dispose()
    resolved, amqp = bench_vhost(env)
    with tempfile.TemporaryDirectory() as tmp:
        policy_file = chain_policy(regions_of, tmp)
        try:
            figures = {"csv": _export_once(env, amqp, policy_file, "csv", lo, today, total, Path(tmp), url),
                       "xlsx": _export_once(env, amqp, policy_file, "xlsx", xlsx_lo, today, xlsx_expected,
                                            Path(tmp), url),
                       # The same CSV, the process's sessions without PostgreSQL's JIT compilation (libpq
                       # reads PGOPTIONS): what compiling the statement's expressions costs.
                       "csv_jit_off": _export_once(env, amqp, policy_file, "csv", lo, today, total, Path(tmp), url,
                                                   PGOPTIONS="-c jit=off")}
        finally:
            drop_vhost(resolved)
    figures["csv"]["period"] = figures["csv_jit_off"]["period"] = f"{lo}..{today}"
    figures["xlsx"]["period"] = f"{xlsx_lo}..{today}"
    _part(figures, "csv_plan", lambda: _export_plan(url, datetime.combine(lo, day_time(), ZONE), datetime.combine(
        today + timedelta(days=1), day_time(), ZONE), regions_of))
    return figures


def code_state() -> dict:
    """Which reporting code was measured: a digest of services/reporting's Python files (they
    change between runs), and whether it has rollups."""
    import hashlib

    from services.reporting import repository

    digest = hashlib.sha1()
    for path in sorted((Path(__file__).resolve().parent.parent / "services" / "reporting").rglob("*.py")):
        digest.update(path.read_bytes())
    return {"services_reporting_sha1": digest.hexdigest()[:12], "refresh_rollups": hasattr(repository,
                                                                                           "refresh_rollups")}


def _part(figures: dict, name: str, measure) -> None:
    """figures[name] = measure(), or what failed: the other parts still run."""
    import traceback

    try:
        figures[name] = measure()
    except Exception as exc:  # noqa: BLE001 - reported as the part's figure
        traceback.print_exc()
        figures[name] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}


def measure_reads(env, url: str, cases: int = 1_000_000, runs: int = 30, budget: float = 10,
                  what=("kpis", "export"), xlsx_rows: int = 100_000) -> dict:
    now = datetime.now(timezone.utc)
    regions_of = chain()
    figures = {"cases": cases, "branches": len(regions_of), "regions": len(set(regions_of.values())),
               "code": code_state(), "facts_mismatches": _check_facts(now, regions_of),
               "load": load_chain(url, now, regions_of, cases)}
    if "kpis" in what:
        _part(figures, "kpis", lambda: measure_kpis(url, now, regions_of, runs, budget))
    if "export" in what:
        _part(figures, "export", lambda: measure_export(env, url, now, regions_of, xlsx_rows))
    return figures


# --- by hand -------------------------------------------------------------------------------------------

def _print_ingest(figures: dict) -> None:
    preloaded = f", {figures['preloaded_cases']:,} cases loaded first" if figures["preloaded_cases"] else ""
    print(f"{figures['events']:,} events of {figures['branches']:,} branches (built in {figures['build_s']} s"
          f"{preloaded}): "
          + ", ".join(f"{k} {v}" for k, v in figures["kinds"].items()))
    for batch, r in figures["runs"].items():
        print(f"batch {batch:>4}: {r['per_s']} events/s ({r['logged'] - r['first_logged']:,} in {r['seconds']} s from "
              f"the first logged; all {r['events']:,} logged {r['from_start_s']} s after the process started"
              f"{'' if r['complete'] else ', NOT ALL'}); CPU per 1,000 events: the process {r['cpu_s_per_1000']} s, "
              f"its {r['backends']} postgres backends {r['postgres_cpu_s_per_1000']} s; {r['cases']:,} cases, "
              f"{r['visits']:,} visits, {r['sale_items']:,} sale items, {r['alerts']} alerts; "
              f"{r['failed_events']} events failed; published at {r['publish_per_s']}/s")


def _print_reads(figures: dict) -> None:
    load = figures["load"]
    print(f"loaded in {load['load_s']} s (COPY {load['copy_s']} s, indexes {load['index_s']} s, rollups "
          f"{load['rollups_s'] if load['rollups'] else 'none'}): "
          + ", ".join(f"{t} {n:,} ({load['sizes'][t]})" for t, n in load["rows"].items())
          + f"; fold check: {figures['facts_mismatches']} of 300 sampled cases differ")
    for part in ("kpis", "export"):
        if "error" in figures.get(part, {}):
            print(f"{part} FAILED: {figures[part]['error']}")
    kpis = figures.get("kpis")
    if kpis and "error" not in kpis:
        for name, q in kpis["queries"].items():
            print(f"{name:28} p50 {q['p50_ms']:8} ms  p95 {q['p95_ms']:8} ms  max {q['max_ms']:8} ms  "
                  f"({q['runs']} runs, {q['groups']} groups)")
        for why, looked in kpis["explain"].items():
            print(f"\n{why}: {looked['call']}; EXPLAIN (ANALYZE, BUFFERS) of its statements:")
            for e in looked["statements"]:
                print(f"\n-- {e['statement']}: {e['execution_ms']} ms (JIT {e['jit_ms']} ms)\n" + "\n".join(e["plan"]))
        print("\nwith jit = off: " + ", ".join(f"{name} p50 {j['p50_ms']} ms (with JIT {j['with_jit_p50_ms']})"
                                               for name, j in kpis["jit_off"].items()))
    export = figures.get("export")
    if export and "error" not in export:
        for kind in ("csv", "xlsx", "csv_jit_off"):
            e = export[kind]
            if "error" in e:
                print(f"\n{kind} ({e['period']}, {e['expected_rows']:,} cases): FAILED, {e['status']} after "
                      f"{e['seconds']} s: {e['error']}")
                continue
            print(f"\n{kind} ({e['period']}): {e['rows']:,} rows ({e['expected_rows']:,} expected) in "
                  f"{e['seconds']} s: "
                  f"{e['rows_per_s']} rows/s, {e['bytes'] / 1e6:.1f} MB, first byte after {e['first_byte_s']} s; "
                  f"RSS idle {e['idle_rss_mb']} MB, peak (VmHWM) {e['peak_rss_mb']} MB, by tenth of the body "
                  f"{e['rss_by_tenth_mb']}; CPU per 1,000 rows: the process {e['cpu_ms_per_1000_rows']} ms, its "
                  f"PostgreSQL backends {e['postgres_cpu_ms_per_1000_rows']} ms; check {e['check']}")
        plan = export["csv_plan"]
        print("\nthe CSV export's cursor plan:\n" + ("\n".join(plan) if isinstance(plan, list) else plan["error"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.reporting", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="events a second one reporting process logs and folds from the bus")
    ingest.add_argument("--events", type=int, default=50_000, help="events published (default 50,000)")
    ingest.add_argument("--batches", default="500,250,100",
                        help="batch sizes, one run each (default 500,250,100: the service's default first)")
    ingest.add_argument("--timeout", type=float, default=300, help="the most one run may take (default 300 s)")
    ingest.add_argument("--preload", type=int, default=0,
                        help="cases loaded (as `kpis` loads them) before each run (default none)")
    for name, text in (("kpis", "queries.kpis among a million cases"), ("export", "the CSV and XLSX exports"),
                       ("reads", "kpis then export on one load")):
        reads = sub.add_parser(name, help=text)
        reads.add_argument("--cases", type=int, default=1_000_000, help="cases loaded (default 1,000,000)")
        reads.add_argument("--runs", type=int, default=30, help="timed calls of each KPI query (default 30)")
        reads.add_argument("--budget", type=float, default=10,
                           help="seconds one KPI query's runs may take, 3 runs at least (default 10)")
        reads.add_argument("--xlsx-rows", type=int, default=100_000, help="rows of the XLSX export (default 100,000)")
    args = parser.parse_args(argv)
    os.environ.setdefault("CLOSELOOP_DEV_KEYS", "1")  # the hq_analyst token, the service's own keys
    env = {**os.environ, "CLOSELOOP_DB_PREFIX": os.environ.get("CLOSELOOP_DB_PREFIX", "closeloop_bench")}
    if args.command == "ingest":
        try:
            figures = measure_ingest(env, args.events, tuple(int(b) for b in args.batches.split(",")), args.timeout,
                                     args.preload)
        finally:
            db.drop_database(database_url(env))
        if not args.json:
            _print_ingest(figures)
    else:
        what = ("kpis", "export") if args.command == "reads" else (args.command,)
        url = fresh_database(env)
        try:
            figures = measure_reads(env, url, args.cases, args.runs, args.budget, what, args.xlsx_rows)
        finally:
            db.drop_database(url)
        if not args.json:
            _print_reads(figures)
    if args.json:
        print(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
