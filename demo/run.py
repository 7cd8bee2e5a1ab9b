"""`closeloop demo`: plays a plausible chain's last D days through the services' HTTP APIs, moving
the demo clock the services read (shared.calendar.clock.DemoClock) from D days back to now.

Each day, in the branches' hours (their time zones): the tills and front desks post complaints,
suggestions, praise and sales; a new case is looked at a minute after it comes, and each task it
waits for is done at an instant of its own, on time or past its deadline as the case's plan says
(the whole task list is looked at every half hour too); the agents work their queues five times a
day. The clock moves from one of these instants to the next (a night in one step); a deadline a
task is left past gets an instant of its own, where the demo waits until investigation's timer
has marked the breach. At the end the clock is back at real time (offset zero)."""
from __future__ import annotations

import heapq
import itertools
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time as clock_time, timedelta, timezone

from demo.api import SERVICES, Api, DemoError
from demo.chain import Chain, Post
from demo.clock import Hand, rewind
from demo.work import Work

STAFF_EVERY = timedelta(minutes=30)


@dataclass
class Settings:
    branches: int | None
    days: int
    urls: dict[str, str]
    gateway: str | None
    clock_file: str
    seed: int
    patience: float
    policy_file: str | None = None


class Agenda:
    """What happens when, in time order: (instant, what, fn(instant)). `planned` counts the
    entries made up front, which the progress bar measures."""

    def __init__(self):
        self._heap, self._order = [], itertools.count()
        self.planned = 0

    def add(self, at: datetime, what: str, fn, planned: bool = False) -> None:
        heapq.heappush(self._heap, (at, next(self._order), what, fn, planned))
        self.planned += planned

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pop(self):
        return heapq.heappop(self._heap)

    def first(self) -> datetime:
        return self._heap[0][0]


class Progress:
    """A plain text bar on stderr, redrawn in place on a terminal; elsewhere (a container's
    log) a line a day."""

    def __init__(self, total: int, days: int, stream=sys.stderr):
        self.total, self.days, self.stream = max(total, 1), days, stream
        self.tty = stream.isatty()
        self.shown, self.day = 0.0, None

    def show(self, done: int, day: int, now: datetime, tally: Counter, planned: bool = True) -> None:
        """`now`: the demo clock, in the chain's (first branch's) time zone; `planned`: at a step
        of the day's plan (not a task done at night)."""
        if self.tty and time.monotonic() - self.shown < 0.1 and done < self.total:
            return
        if not self.tty and (day == self.day or not planned):
            return
        self.shown, self.day = time.monotonic(), day
        share = min(done / self.total, 1.0)
        bar = "#" * int(share * 30) + "-" * (30 - int(share * 30))
        line = (f"demo [{bar}] {share:4.0%}  day {min(day, self.days)}/{self.days}  {now:%Y-%m-%d %H:%M}  "
                f"complaints {tally['complaints']}  sales {tally['sales']}  tasks {tally['tasks']}  "
                f"calls {sum(v for k, v in tally.items() if k.startswith('visit:'))}")
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Demo:
    def __init__(self, settings: Settings, policy, stream=sys.stderr):
        self.settings, self.stream = settings, stream
        count = settings.branches if settings.branches is not None else min(3, len(policy.branches))
        self.zone = zone = next(iter(policy.branches.values())).zone
        today = datetime.now(zone).date()
        self.dates = [today - timedelta(days=settings.days - n) for n in range(settings.days)]
        self.chain = Chain(policy, count, settings.seed, self.dates[0])
        aftercare = policy.sections.get("aftercare")
        self.contact_hours = aftercare.contact_hours if aftercare is not None else (clock_time(9), clock_time(21))
        self.api = Api(settings.urls, settings.gateway, settings.patience)
        self.hand = Hand(settings.clock_file)
        self.tally: Counter = Counter()
        self.agenda = Agenda()
        self.work = Work(self.api, self.chain, self.tally, self.agenda.add)
        self.run_id = uuid.uuid4().hex[:8]

    # -- before anything is posted -----------------------------------------------------------------

    def check_services(self) -> None:
        """Every service answers, is ready, and reads the clock the demo moves."""
        path = self.settings.clock_file
        if not self.hand.exists():
            raise DemoError(f"no demo clock at {path}: start the services with the demo clock (make dev "
                            f"DEV_ARGS=--demo-clock), or give the demo the file they read (--clock-file, "
                            f"CLOSELOOP_DEMO_CLOCK_FILE)")
        try:
            offset = self.hand.offset()
        except (OSError, ValueError) as exc:
            raise DemoError(f"the demo clock {path} is unreadable: {exc}") from None
        for service in SERVICES:
            status, body = self.api.health(service)
            if status != 200:
                raise DemoError(f"{service} is not ready at {self.api.where(service)} ({body.get('status')}: "
                                f"{'; '.join(body.get('reasons') or []) or status})")
            clock = body.get("demo_clock")
            if clock is None:
                raise DemoError(f"{service} does not run on the demo clock: start it with CLOSELOOP_DEMO_CLOCK_FILE="
                                f"{path} (make dev DEV_ARGS=--demo-clock does)")
            if abs(clock["offset_seconds"] - offset) > 1:
                raise DemoError(f"{service} reads another demo clock (offset {clock['offset_seconds']:.0f} s; {path} "
                                f"says {offset:.0f} s): give the demo the services' file (--clock-file)")
            if datetime.fromisoformat(clock["now"].replace("Z", "+00:00")) > self.hand.now() + timedelta(minutes=2):
                raise DemoError(f"{service}'s clock is at {clock['now']}, ahead of the demo clock: it ran before the "
                                f"clock was set back, and a running service's clock never goes back; restart it")

    def plan(self) -> None:
        """The days' traffic and the rounds of the staff and agents, on the agenda."""
        for index, day in enumerate(self.dates):
            for post in self.chain.traffic(index, day):
                self.agenda.add(post.at, post.kind, lambda at, post=post: self.post(post), planned=True)
            hours = [(b, b.hours_on(day)) for b in self.chain.branches]
            opened = [(self._local(b, day, h[0]), self._local(b, day, h[1])) for b, h in hours if h]
            if opened:
                at, end = min(o for o, _ in opened) - STAFF_EVERY, max(c for _, c in opened) + 2 * STAFF_EVERY
                while at <= end:
                    self.agenda.add(at, "staff", self.work.staff_round, planned=True)
                    at += STAFF_EVERY
            first, last = (t.hour * 60 + t.minute for t in self.contact_hours)
            for branch, window in hours:
                if window is None:
                    continue
                for minute in range(first + 30, last - 59, max((last - 90 - first) // 4, 1)):
                    self.agenda.add(self._local(branch, day, minute), "agent",
                                    lambda at, code=branch.code: self.work.agent_round(code, at), planned=True)
        start, now = self.agenda.first().astimezone(self.zone), self.hand.now().astimezone(self.zone)
        if now > start:
            days = self.settings.days
            raise DemoError(f"the demo clock is at {now:%Y-%m-%d %H:%M}, after the first instant of {days} days of "
                            f"history ({start:%Y-%m-%d %H:%M} {self.zone.key}); set it back and restart the "
                            f"services: make dev DEV_ARGS='--demo-clock {days}' (or `closeloop demo --rewind-clock "
                            f"--days {days}` before they start)")

    @staticmethod
    def _local(branch, day: date, minute: int) -> datetime:
        return datetime.combine(day, clock_time()).replace(tzinfo=branch.zone) + timedelta(minutes=minute)

    # -- playing -----------------------------------------------------------------------------------

    def play(self) -> Counter:
        """The whole history; the clock is back at real time at the end, also when a service
        fails on the way (the services then go on from now)."""
        started = time.monotonic()
        self.check_services()
        self.plan()
        progress = Progress(self.agenda.planned, len(self.dates), self.stream)
        done = 0
        try:
            while self.agenda:
                at, _, what, fn, planned = self.agenda.pop()
                if at > datetime.now(timezone.utc):  # a deadline beyond the history: real time will bring it
                    continue
                now = self.hand.move_to(at)
                fn(now)
                done += planned
                local = now.astimezone(self.zone)
                progress.show(done, (local.date() - self.dates[0]).days + 1, local, self.tally, planned)
        finally:
            progress.close()
            self.hand.to_real_time()
        self.work.see_new_cases()
        self.tally["seconds"] = int(time.monotonic() - started)
        self.tally["calls"], self.tally["waited"] = self.api.calls, int(self.api.waited)
        return self.tally

    def post(self, post: Post) -> None:
        key = f"demo-{self.run_id}-{uuid.uuid4().hex[:12]}"
        path = "/v1/sales" if post.kind == "sale" else "/v1/complaints"
        _, answer = self.api.call("intake", "POST", path, post.poster, body=post.body, key=key)
        self.tally["sales" if post.kind == "sale" else "complaints" if post.kind == "complaint" else post.kind] += 1
        if post.kind == "sale":
            self.work.sales.add(answer["id"])
            self.tally["consented"] += post.body["customer"]["contact_consent"]
            if post.allergy_cluster:
                self.work.allergy_sales.add(answer["id"])
            return
        if post.kind == "complaint":
            self.tally[f"category:{answer['category']}"] += 1
            self.tally["classified"] += answer.get("category_source") == "automatic"
            self.tally["urgent"] += answer["priority"] == "urgent"
        self.work.expect_case(answer["id"], post.branch, post.kind, answer["priority"] == "urgent", post.plan,
                              f"{post.kind} {answer['reference']}", post.at)


def summary(tally: Counter, demo: Demo) -> str:
    chain, t = demo.chain, tally
    categories = sorted(k.split(":", 1)[1] for k in t if k.startswith("category:"))
    late = sum(v for k, v in t.items() if k.startswith("late:"))
    adverse = ", ".join(k.split(":", 1)[1] for k in sorted(t) if k.startswith("adverse_at:"))
    minutes, seconds = divmod(t["seconds"], 60)
    return "\n".join([
        f"closeloop demo: {len(chain.branches)} branch(es) ({', '.join(b.code for b in chain.branches)}), "
        f"{len(demo.dates)} day(s) from {demo.dates[0]} to {demo.dates[-1]}, in {minutes} min {seconds} s "
        f"({t['calls']} calls, {t['waited']} s of them waiting for the services' timers and consumers)",
        f"  complaints {t['complaints']} ({t['urgent']} urgent, {t['classified']} classified by intake; categories: "
        f"{', '.join(categories)}), suggestions {t['suggestion']}, praise {t['praise']}",
        f"  sales {t['sales']} ({t['consented']} with consent to be called)",
        f"  tasks done {t['tasks']}: {t['task:notify_customer']} cases resolved, {late} past a deadline, "
        f"{t['approvals_asked']} remedies above the proposer's authority (approved by a store manager "
        f"{t['approved_by:store_manager']}, a regional manager {t['approved_by:regional_manager']}, HQ "
        f"{t['approved_by:hq_admin']}), "
        f"{t['task:open_corrective_action']} corrective actions",
        f"  calls {t['visit:reached']} reached, {t['visit:not_reached']} not reached, {t['visit:call_back']} call "
        f"backs; {t['completed:return']} return visits and {t['completed:follow_up']} follow-ups completed, "
        f"{t['reopened']} case(s) reopened by a low score",
        f"  adverse reactions {t['adverse_reactions']} on dye batch {chain.allergy_batch} ({adverse or 'none yet'})",
        "  the demo clock is back at real time. To look at the chain: closeloop token issue --role hq_admin "
        "--branch '*' --dashboard"])


def main(args) -> int:
    """`closeloop demo` (shared.cli parses the options)."""
    from shared.calendar.policy import PolicyError, load_policy

    if args.days < 1:
        print("closeloop demo: --days must be at least 1", file=sys.stderr)
        return 2
    if args.rewind_clock:
        rewind(args.clock_file, args.days)
        print(f"demo clock {args.clock_file}: {args.days + 1} days back; start the services now (a running "
              f"service's clock never goes back)")
        return 0
    urls = {"intake": args.intake_url, "investigation": args.investigation_url, "aftercare": args.aftercare_url}
    settings = Settings(args.branches, args.days, urls, args.gateway, args.clock_file, args.seed, args.patience,
                        args.policy)
    demo = None
    try:
        policy = load_policy(settings.policy_file)
        demo = Demo(settings, policy)
        tally = demo.play()
    except (PolicyError, DemoError) as exc:
        print(f"closeloop demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        moved = demo is not None and demo.agenda.planned and not demo.hand.offset()
        print(f"closeloop demo: interrupted{'; the demo clock is back at real time' if moved else ''}",
              file=sys.stderr)
        return 130
    print(summary(tally, demo))
    return 0
