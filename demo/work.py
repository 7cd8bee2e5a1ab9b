"""The chain's people at work on the services' APIs: store managers, case owners, regional
managers and HQ work investigation's task list, each branch's aftercare agent its visit queue. A
task is done some time after it appears, or past its deadline when the case's plan says so; then
the demo first waits until the service's timer has marked the breach, as it would have by then."""
from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from demo import texts
from demo.api import Api, DemoError, Person
from demo.chain import CasePlan, Chain
from shared.calendar.clock import isoformat

# Minutes after a task appears that it is done, (urgent case, other case).
DELAYS = {"assign": ((5, 15), (10, 60)), "respond": ((10, 30), (30, 240)), "acknowledge": ((60, 1800),) * 2,
          "record_findings": ((60, 180), (120, 1560)), "propose_remedy": ((20, 180),) * 2,
          "approve": ((30, 300),) * 2, "fulfil": ((20, 360),) * 2, "notify_customer": ((20, 180),) * 2,
          "open_corrective_action": ((30, 1200),) * 2, "close_corrective_action": ((2880, 7200),) * 2,
          "decide": ((1200, 3600),) * 2, "pass_on": ((240, 1800),) * 2}
PROMISE_DELAY = (1200, 2400)  # a free redo or re-dye is given a day or so later
LATE_BY = ((20, 150), (60, 1200))  # minutes past the deadline, when the plan says late
TIMER_CLOCKS = ("first_response", "resolution", "approval")
SECOND_REMEDY = ("voucher", 300, "manager")  # a reopened case's new offer
GENERIC = texts.Complaint("service_quality", "", facts="核实了服务记录和顾客反映的情况", root_cause="服务流程执行不到位",
                          remedy=("apology", 0, "manager"), measures="当面致歉并改进服务流程",
                          action="复盘服务流程并组织培训")


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass
class Case:
    id: str
    branch: str
    kind: str
    urgent: bool
    plan: CasePlan
    rng: random.Random
    owner: str | None = None
    proposals: int = 0


@dataclass
class Work:
    api: Api
    chain: Chain
    tally: Counter
    schedule: object                   # schedule(instant, what, fn): a later look on the agenda
    cases: dict = field(default_factory=dict)
    unseen: dict = field(default_factory=dict)    # case id -> what opens it, until it is seen open
    planned: dict = field(default_factory=dict)   # (case, task) -> when it is done
    own: set = field(default_factory=set)          # the cases this run opened: the only ones it works
    sales: set = field(default_factory=set)        # the sales this run posted: the only visits it works
    allergy_sales: set = field(default_factory=set)
    reopened_one: bool = False

    # -- cases ---------------------------------------------------------------------------------------

    def expect_case(self, case_id: str, branch: str, kind: str, urgent: bool, plan: CasePlan | None, what: str,
                    at: datetime) -> None:
        """A case that will open (a complaint posted, an adverse reaction reported): its store
        manager looks at it a minute later."""
        if plan is not None:
            self.cases[case_id] = Case(case_id, branch, kind, urgent, plan, self._rng(case_id))
        self.own.add(case_id)
        self.unseen[case_id] = what
        self.schedule(at + timedelta(minutes=1), "new case", lambda now: self._look_at(case_id, now))

    def _look_at(self, case_id: str, now: datetime) -> None:
        if case_id in self.unseen:
            self._plan_tasks(self._opened(case_id), now)

    def _opened(self, case_id: str) -> dict:
        """The case, once investigation has opened it."""
        def opened():
            status, view = self.api.call("investigation", "GET", f"/v1/cases/{case_id}", self.chain.hq,
                                         accept=(200, 404))
            return view if status == 200 else None
        view = self.api.wait_for(f"the case of {self.unseen.get(case_id, case_id)}", "investigation", opened)
        self.unseen.pop(case_id, None)
        return view

    def see_new_cases(self) -> None:
        """Every case posted or reported so far is open on investigation."""
        for case_id in list(self.unseen):
            self._opened(case_id)

    def _rng(self, key: str) -> random.Random:
        return random.Random(f"{self.chain.seed}:{key}")

    def _case(self, case_id: str, view: dict | None = None) -> Case:
        """A case the demo posted, or one it learns about now from its view (an adverse
        reaction's)."""
        known = self.cases.get(case_id)
        if known is not None:
            return known
        if view is None:
            _, view = self.api.call("investigation", "GET", f"/v1/cases/{case_id}", self.chain.hq)
        rng = self._rng(view["id"])
        origin = view.get("origin") or {}
        staff = self.chain.staff[view["branch_code"]]
        if origin.get("type") == "adverse_reaction":
            plan = CasePlan(texts.ADVERSE, texts.ADVERSE.remedy, batch=(origin.get("product") or {}).get("batch"))
        else:
            template = rng.choice(self.chain.templates_of(view["category"]) or [GENERIC])
            plan = CasePlan(template, template.remedy, technician=rng.choice(staff.technicians),
                            decision=rng.choice(("adopted", "declined")))
        case = Case(view["id"], view["branch_code"], view["kind"], view["priority"] == "urgent", plan, rng,
                    owner=view.get("owner"))
        self.cases[case.id] = case
        return case

    # -- tasks ---------------------------------------------------------------------------------------

    def staff_round(self, now: datetime) -> None:
        """A look at the whole task list, for tasks no step of the demo's brought (a case a
        follow-up reopened). Another run's cases are left alone: received later than this
        run's clock, they could not be worked now."""
        for task in self.api.pages("investigation", "/v1/tasks", self.chain.hq):
            if task["case_id"] in self.own and not task["paused"]:
                self._plan(task, self._case(task["case_id"]), now)

    def _plan_tasks(self, view: dict, now: datetime) -> None:
        case = self._case(view["id"], view)
        for task in view["open_tasks"]:
            if not task["system"]:
                self._plan({**task, "case_id": view["id"], "reference": view["reference"],
                            "branch_code": view["branch_code"]}, case, now)

    def _plan(self, task: dict, case: Case, now: datetime) -> None:
        """When the task will be done, on the agenda; past its deadline, the demo first looks
        that the breach is marked when the deadline passes."""
        key = (case.id, task["name"])
        if key in self.planned:
            return
        when = self.planned[key] = self._when(task, case, now)
        self.schedule(when, task["name"], lambda at: self._do(task, case, key, when, at))
        due = _at(task["due"])
        if due is not None and now < due < when and self._timed(task):
            self.schedule(due + timedelta(seconds=2), "deadline",
                          lambda at: self.planned.get(key) == when and self._see_breach(task, at))

    def _do(self, task: dict, case: Case, key: tuple, when: datetime, now: datetime) -> None:
        if self.planned.get(key) != when:  # done already (a 409), or planned again
            return
        del self.planned[key]
        answer = self._complete(task, case, now)
        if answer is not None:
            self._plan_tasks(answer, now)

    def _when(self, task: dict, case: Case, now: datetime) -> datetime:
        name, due = task["name"], _at(task["due"])
        if name in case.plan.late and due is not None:
            low, high = LATE_BY[0 if case.urgent else 1]
            if name == "close_corrective_action":
                low, high = 1440, 2880
            return self._working(case, due + timedelta(minutes=case.rng.uniform(low, high)))
        remedy = case.plan.remedy or ("", 0, "")
        low, high = PROMISE_DELAY if name == "fulfil" and remedy[0] in ("redo_service", "redye") else \
            DELAYS.get(name, ((30, 120),) * 2)[0 if case.urgent else 1]
        when = self._working(case, now + timedelta(minutes=case.rng.uniform(low, high)))
        if due is not None and when > due - timedelta(minutes=5) and due > now:  # on time: before the deadline
            when = now + (due - now) * case.rng.uniform(0.3, 0.8)
        return when

    def _working(self, case: Case, when: datetime) -> datetime:
        """Urgent cases are worked at any hour; the others while the branch is open."""
        return when if case.urgent else self.chain.staff[case.branch].branch.next_opening(when)

    @staticmethod
    def _timed(task: dict) -> bool:
        """A deadline whose timer marks something when it passes: an SLA clock's breach, a promise."""
        return task["clock"] in TIMER_CLOCKS and task["name"] != "close_corrective_action"

    def _see_breach(self, task: dict, now: datetime) -> None:
        """Wait until investigation's timer has fired for a task past its deadline (the breach
        marked, or the promise broken), as it has by this hour on a chain that is not a demo."""
        path = f"/v1/cases/{task['case_id']}"

        def fired():
            _, view = self.api.call("investigation", "GET", path, self.chain.hq)
            if not any(t["name"] == task["name"] for t in view["open_tasks"]):
                return True  # done meanwhile
            remedy = view["remedies"][-1] if view["remedies"] else None
            if task["name"] == "fulfil" and remedy and remedy["deadline"]:
                return remedy["promise"] is not None or _at(remedy["deadline"]) > now
            clock = view["sla"].get(task["clock"])
            return clock is None or clock["stopped_at"] or clock["breach_level"] >= 1 or _at(clock["due"]) > now
        self.api.wait_for(f"the timer of case {task['reference']} ({task['name']} due {task['due']})",
                          "investigation", fired)

    def _complete(self, task: dict, case: Case, now: datetime) -> dict | None:
        """The task done; the case as it is now (None: it was not waiting any more)."""
        name, due = task["name"], _at(task["due"])
        if due is not None and due <= now and self._timed(task):
            self._see_breach(task, now)
        who, body = self._body(task, case, now)
        path = f"/v1/cases/{case.id}/tasks/{name}"
        status, answer = self.api.call("investigation", "POST", path, who, body=body, accept=(200, 409, 422))
        needed = ((answer.get("error") or {}).get("fields") or {}).get("needed_role")
        if status == 422 and name == "approve" and needed:  # the one whose authority covers it
            who = self.chain.person(needed[0], case.branch)
            status, answer = self.api.call("investigation", "POST", path, who, body=body, accept=(200, 409))
        elif status == 422:
            error = answer.get("error") or {}
            raise DemoError(f"investigation refused {name} on case {task['reference']}: {error.get('message')} "
                            f"{error.get('fields') or ''}")
        if status == 409:  # done by someone else meanwhile, or no longer waiting
            return None
        self.tally["tasks"] += 1
        self.tally[f"task:{name}"] += 1
        if due is not None and now > due and self._timed(task):
            self.tally[f"late:{name}"] += 1
        if name == "assign":
            case.owner = body["owner"]
        elif name == "approve":
            self.tally[f"approved_by:{who.role}"] += 1
        elif name == "propose_remedy":
            case.proposals += 1
            if any(r["status"] == "awaiting_approval" for r in answer.get("remedies", [])[-1:]):
                self.tally["approvals_asked"] += 1
        return answer

    def _body(self, task: dict, case: Case, now: datetime) -> tuple[Person, dict]:
        """Who completes the task, and with what."""
        name, staff = task["name"], self.chain.staff[case.branch]
        template = case.plan.template or GENERIC
        owner = self.chain.owner(case.owner, case.branch) or staff.manager
        batch = case.plan.batch or "-"
        if name == "assign":
            return staff.manager, {"owner": case.rng.choice(staff.owners).subject, "note": "请负责跟进到结案"}
        if name == "respond":
            if case.plan.template is texts.ADVERSE:
                return owner, {"message": texts.ADVERSE_RESPONSE, "channel": "phone"}
            if case.urgent:
                return owner, {"message": texts.URGENT_RESPONSE, "channel": "phone"}
            return owner, {"message": texts.FIRST_RESPONSE.format(branch=staff.branch.name, owner=owner.subject),
                           "channel": case.rng.choice(("phone", "phone", "wechat", "sms"))}
        if name == "acknowledge":
            return staff.front_desk, {"message": texts.ACKNOWLEDGE.get(case.kind, texts.ACKNOWLEDGE["praise"]),
                                      "channel": "wechat"}
        if name == "record_findings":
            return owner, {"facts": template.facts.format(batch=batch), "service_log_checked": True,
                           "product_batch_checked": bool(template.product or case.plan.batch),
                           "root_cause": template.root_cause.format(batch=batch),
                           "responsibility": template.responsibility, "signed_by": owner.subject}
        if name == "propose_remedy":
            kind, amount, proposer = case.plan.remedy if case.proposals == 0 else SECOND_REMEDY
            return (owner if proposer == "owner" else staff.manager), {
                "type": kind, "amount": amount, "note": template.measures.format(batch=batch)[:200]}
        if name == "approve":
            return self.chain.person(task["roles"][0], case.branch), {"note": "同意该方案，请尽快落实"}
        if name == "fulfil":
            return owner, {"note": "已为顾客办理完毕"}
        if name == "notify_customer":
            return owner, {"measures": template.measures.format(batch=batch), "completed_at": isoformat(now),
                           "responsible": owner.subject, "follow_up": texts.FOLLOW_UP_PLAN}
        if name == "open_corrective_action":
            return owner, {"action": template.action or GENERIC.action, "owner": staff.manager.subject,
                           "due": isoformat(now + timedelta(days=7))}
        if name == "close_corrective_action":
            return staff.manager, {"note": "整改已完成，店长已复查"}
        if name == "decide":
            decision = case.plan.decision or "adopted"
            return staff.manager, {"decision": decision, "note": texts.DECISIONS[decision]}
        if name == "pass_on":
            return staff.manager, {"to": [case.plan.technician or staff.technicians[0]], "note": "已在晨会上表扬"}
        raise DemoError(f"the demo does not know the task {name!r} (case {task['reference']})")

    # -- the visit queues ----------------------------------------------------------------------------

    def agent_round(self, branch: str, now: datetime) -> None:
        agent = self.chain.staff[branch].agent
        for visit in self.api.pages("aftercare", "/v1/visits", agent, {"branch": branch}):
            if visit["sale_id"] in self.sales or visit["case_id"] in self.own:  # this run's
                self._call(visit, agent, now)

    def _call(self, visit: dict, agent: Person, now: datetime) -> None:
        rng = self._rng(f"{visit['id']}:{visit['attempts_made']}")
        path = f"/v1/visits/{visit['id']}"
        # The agent opens it and asks for the customer's number (intake logs the read and its purpose).
        self.api.call("aftercare", "GET", path, agent, params={"contact": "true", "purpose": "return visit call"})
        allergy = visit["sale_id"] in self.allergy_sales
        low_score = visit["kind"] == "follow_up" and not self.reopened_one
        never = self._rng(visit["id"]).random() < 0.06  # a customer who never answers: the visit is abandoned
        draw = 1.0 if never else rng.random()
        if allergy or low_score or draw < 0.68:
            body = {"outcome": "reached", "channel": "phone", "answers": self._answers(visit, rng, allergy, low_score)}
        elif draw < 0.94 or never or visit["attempts_made"] > 0:
            body = {"outcome": "not_reached", "note": rng.choice(("无人接听", "关机", "占线"))}
        else:
            local = now.astimezone(self.chain.staff[visit["branch_code"]].branch.zone)
            body = {"outcome": "call_back", "note": "顾客在忙，约明晚再打",
                    "call_back_at": isoformat((local + timedelta(days=1)).replace(hour=19, minute=0, second=0))}
        status, answer = self.api.call("aftercare", "POST", f"{path}/attempts", agent, body=body, accept=(200, 409))
        if status == 409:  # not due any more, or finished meanwhile
            return
        self.tally[f"visit:{body['outcome']}"] += 1
        if answer.get("status") == "completed":
            self.tally[f"completed:{visit['kind']}"] += 1
        if allergy:
            from services.investigation.handlers import ADVERSE_REACTION_CASES  # its case's id comes from the visit

            self.tally["adverse_reactions"] += 1
            self.tally[f"adverse_at:{visit['branch_code']}"] += 1
            self.expect_case(str(uuid.uuid5(ADVERSE_REACTION_CASES, visit["id"])), visit["branch_code"], "complaint",
                             True, None, f"the adverse reaction found by visit {visit['id']}", now)
        if low_score:
            self.reopened_one = True
            self.tally["reopened"] += 1

    def _answers(self, visit: dict, rng: random.Random, allergy: bool, low_score: bool) -> dict:
        if allergy:
            return {"met_expectations": False, "discomfort": True, "discomfort_description": texts.DISCOMFORT,
                    "item": "HAIR-DYE", "satisfaction": 2, "packaging_ok": None, "suggestions": "希望查一下这批染膏"}
        if visit["kind"] == "follow_up":
            score = 2 if low_score else rng.choice((5, 5, 4, 4, 3))
            return {"met_expectations": not low_score, "discomfort": False, "satisfaction": score,
                    "resolved": not low_score, "packaging_ok": None,
                    "suggestions": texts.STILL_UNHAPPY if low_score else None}
        score = rng.choices((5, 4, 3, 2, 1), (50, 30, 12, 6, 2))[0]
        products = any(item["type"] == "product" for item in visit["items"])
        return {"met_expectations": score >= 3, "discomfort": False, "satisfaction": score,
                "packaging_ok": (rng.random() < 0.9) if products else None,
                "suggestions": rng.choice(texts.VISIT_SUGGESTIONS) if rng.random() < 0.3 else None}
