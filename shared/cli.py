"""`closeloop`: the operator's command line (token issue, policy check, process check, db
upgrade, serve, relay, dev, demo). Each command prints what it did; errors go to stderr with exit 2."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time

from shared.runtime import config as settings

def _fail(message: str) -> int:
    print(f"closeloop: {message}", file=sys.stderr)
    return 2


def cmd_token_issue(args) -> int:
    from shared.security import auth

    if args.dashboard and args.role not in ("hq_analyst", "hq_admin", "regional_manager", "store_manager"):
        return _fail("--dashboard is for store_manager, regional_manager, hq_analyst or hq_admin")
    from shared.calendar.policy import load_policy

    policy = load_policy(os.environ.get("CLOSELOOP_POLICY_FILE") or None)
    if args.region and args.region not in policy.regions():
        return _fail(f"unknown region {args.region!r}; regions: {', '.join(sorted(policy.regions()))}")
    if args.branch and args.branch != "*" and args.branch not in policy.branches:
        return _fail(f"unknown branch {args.branch!r}; branches: {', '.join(sorted(policy.branches))}")
    try:
        ttl = auth.parse_ttl(args.ttl)
        token = auth.issue_token(role=args.role, subject=args.role if args.subject is None else args.subject,
                                 branch=args.branch, region=args.region, ttl=ttl)
    except (ValueError, OverflowError) as exc:  # OverflowError: a lifetime past the calendar's end
        return _fail(str(exc))
    if args.dashboard:
        base = os.environ.get("REPORTING_URL", f"http://127.0.0.1:{settings.HTTP_PORTS['reporting']}")
        print(f"{base}/dashboard#token={token}")
    else:
        print(token)
    return 0


def cmd_policy_check(args) -> int:
    from shared.calendar.policy import DEFAULT_POLICY_PATH, check_policy

    path = args.file or os.environ.get("CLOSELOOP_POLICY_FILE") or DEFAULT_POLICY_PATH
    problems = check_policy(path)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def cmd_process_check(args) -> int:
    from shared.workflow.check import check_file

    def names(text):
        return [name.strip() for name in (text or "").split(",") if name.strip()]

    report = check_file(args.file, names(args.requires), names(args.operators) if args.operators else None)
    if report.problems:
        print(f"{args.file}: {len(report.problems)} problem(s)", file=sys.stderr)
        for problem in report.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok (process {', '.join(report.process_ids)})")
    return 0


def cmd_keys_ensure(args) -> int:
    """The development signing pair and customer-reference key, made if missing."""
    from shared.security import auth
    from shared.runtime import provider as runtime

    os.environ.setdefault("CLOSELOOP_DEV_KEYS", "1")
    runtime.customer_ref_key({})
    print(auth.ensure_dev_keys())
    return 0


def cmd_db_upgrade(args) -> int:
    from shared.persistence import db

    for service in args.services or settings.DATABASE_SERVICES:
        if service not in settings.DATABASE_SERVICES:
            return _fail(f"no migrations for {service!r} yet; services: {', '.join(settings.DATABASE_SERVICES)}")
        url = settings.service_database_url(service)
        created = db.create_database(url)
        problem = db.check_utf8(url)
        if problem:
            return _fail(f"{service}: {problem}")
        db.migrate(service, url)
        print(f"{service}: database {url.rsplit('/', 1)[-1]} {'created and ' if created else ''}migrated")
    return 0


def _database_problem(config: dict) -> str | None:
    """Why the service's database is unusable (not UTF-8). A database that is down at start is
    waited for as usual, and each new connection is checked again (shared.persistence.db)."""
    import sqlalchemy as sa

    from shared.persistence import db

    try:
        return db.check_utf8(config["DATABASE_URL"])
    except (sa.exc.ArgumentError, ValueError) as exc:  # not a database URL at all
        return f"DATABASE_URL is not a PostgreSQL URL ({_first_line(exc)})"


def _wait_for_broker(service: str, amqp_uri: str) -> None:
    """Wait until the broker answers, saying so in a line each try (1, 2, 4... 30 s apart), as a
    database down at start is waited for: nameko would fail its start with five tracebacks.
    SIGTERM meanwhile ends the process."""
    import kombu

    delay = 1.0
    while True:
        conn = kombu.Connection(amqp_uri, connect_timeout=5)
        try:
            conn.connect()
            return
        except Exception as exc:  # noqa: BLE001 - any failure to connect is waited out
            print(f"{service}: broker {conn.as_uri()} unreachable ({exc.__class__.__name__}: {exc}); "
                  f"trying again in {delay:.0f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        finally:
            conn.release()


def cmd_serve(args) -> int:
    from shared.runtime import green
    from shared.observability import logs

    green.patch()
    import eventlet
    from nameko.runners import ServiceRunner

    logs.configure(args.service, os.environ.get("LOG_LEVEL", "INFO"))
    from shared.calendar.policy import PolicyError
    from shared.security.auth import KeysNotConfigured

    from shared.calendar.clock import DemoClockRefused
    from shared.runtime import provider as runtime_provider
    from shared.workflow import InvalidProcess

    config = settings.service_config(args.service)
    problem = _database_problem(config)
    if problem:
        return _fail(f"{args.service} cannot start: {problem}")
    service_class = settings.service_class(args.service)
    try:
        # What would fail the start, checked before nameko starts (whose greenthreads would
        # print each failure's traceback three times): the policy, the clock (a demo clock only
        # in development), the service's own files.
        runtime_provider.policy(config.get("POLICY_FILE"))
        runtime_provider.clock(config)
        preflight = getattr(service_class, "preflight", None)
        if preflight is not None:
            preflight(config)
    except (PolicyError, InvalidProcess, OSError, DemoClockRefused) as exc:
        return _fail(f"{args.service} cannot start: {exc}")
    _wait_for_broker(args.service, config["AMQP_URI"])
    runner = ServiceRunner(config)
    runner.add_service(service_class)
    try:
        runner.start()
    except (KeysNotConfigured, PolicyError) as exc:  # said in a line, as relay and purge say it
        return _fail(f"{args.service} cannot start: {exc}")
    stopping = []

    def stop(signum, frame):
        # nameko's HTTP services ignore SIGTERM on their own: stop the runner ourselves,
        # and kill it if in-flight work does not finish in time.
        if stopping:
            return
        stopping.append(signum)

        def shutdown():
            with eventlet.Timeout(9, False):
                runner.stop()
                return
            with eventlet.Timeout(4, False):
                runner.kill()
                return
            # A consumer reconnecting to an unreachable broker never returns from kill.
            print(f"{args.service}: did not stop in 13 s; exiting", file=sys.stderr, flush=True)
            os._exit(1)
        eventlet.spawn(shutdown)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{args.service} serving on {runner.config['WEB_SERVER_ADDRESS']}", file=sys.stderr, flush=True)
    runner.wait()
    return 0


def cmd_relay(args) -> int:
    """The event relay and the notification sender, side by side in two greenlets: neither
    waits for the other, so a slow or failing send never delays an event."""
    from shared.persistence import db
    from shared.runtime import green
    from shared.observability import logs
    from shared.notifications.port import make_notifier
    from shared.notifications.sender import NotificationSender
    from shared.messaging.relay import Relay

    from shared.messaging.relay import heartbeat_path
    from shared.calendar.policy import PolicyError

    if args.healthcheck:
        # For container health checks: a running relay touches its file after each healthy
        # round (broker and database reachable).
        beat = heartbeat_path(args.service)
        age = time.time() - beat.stat().st_mtime if beat.exists() else None
        if age is None or age > 30:
            return _fail(f"relay for {args.service} unhealthy: last healthy round "
                         f"{'never' if age is None else f'{age:.0f}s ago'}")
        print(f"relay for {args.service} healthy ({age:.0f}s ago)")
        return 0
    green.patch()
    import eventlet

    logs.configure(f"{args.service}-relay", os.environ.get("LOG_LEVEL", "INFO"))
    config = settings.service_config(args.service)
    problem = _database_problem(config)
    if problem:
        return _fail(f"relay for {args.service} cannot start: {problem}")
    try:
        # A service that sends on others' behalf publishes each outcome (intake: customer_message_sent).
        on_outcome = getattr(settings.service_class(args.service), "message_outcome", None)
        sender = NotificationSender(db.make_engine(config["DATABASE_URL"], 3), make_notifier(config["NOTIFIER"]),
                                    service=args.service, timeout_s=config["NOTIFY_TIMEOUT_SECONDS"],
                                    lease_s=config["NOTIFY_LEASE_SECONDS"], batch=config["NOTIFY_CONCURRENCY"],
                                    on_outcome=on_outcome)
    except ValueError as exc:  # CLOSELOOP_NOTIFIER, the timeouts or the concurrency: say so at start
        return _fail(f"relay for {args.service} cannot start: {exc}")
    try:
        purger = _purger(args.service, config, db.make_engine(config["DATABASE_URL"], 1))
    except PolicyError as exc:
        return _fail(f"relay for {args.service} cannot start: {exc}")
    relay = Relay(db.make_engine(config["DATABASE_URL"], 2), config["AMQP_URI"],
                  batch_size=args.batch_size, service=args.service)
    relay.heartbeat_file = heartbeat_path(args.service)

    def stop(*_):
        relay.stop()
        sender.stop()
        purger.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The retention purge (shared.persistence.retention), hourly, in a loop of its own too.
    loops = [eventlet.spawn(relay.run), eventlet.spawn(sender.run), eventlet.spawn(purger.run)]
    for loop in loops:
        loop.link(lambda _: stop())  # one ending for any reason ends the other: exit, be restarted
    failed = False
    for loop in loops:
        try:
            loop.wait()
        except Exception as exc:
            print(f"relay for {args.service}: {exc.__class__.__name__}: {exc}", file=sys.stderr, flush=True)
            failed = True
    return 1 if failed else 0


def _purger(service: str, config: dict, engine, **kwargs):
    """The retention purge of one service's database, with the chain policy's retention."""
    from shared.calendar.policy import load_policy
    from shared.persistence.retention import Purger

    return Purger(engine, load_policy(config["POLICY_FILE"]).retention, service=service,
                  interval=float(os.environ.get("CLOSELOOP_PURGE_INTERVAL_SECONDS", "3600")),
                  own=getattr(importlib.import_module(f"services.{service}.models"), "PURGES", ()), **kwargs)


def cmd_purge(args) -> int:
    """One round of what `closeloop relay` does hourly: delete rows older than the policy's
    retention, in batches."""
    from shared.calendar.policy import PolicyError
    from shared.persistence import db

    config = settings.service_config(args.service)
    problem = _database_problem(config)
    if problem:
        return _fail(f"cannot purge {args.service}: {problem}")
    if args.batch_size < 1:
        return _fail("--batch-size must be at least 1")
    engine = db.make_engine(config["DATABASE_URL"], 1)
    try:
        purger = _purger(args.service, config, engine, batch=args.batch_size)
        for done in purger.purge_once():
            print(f"{args.service}: deleted {done.deleted} row(s) of {done.table} in {done.batches} batch(es)")
    except PolicyError as exc:
        return _fail(str(exc))
    finally:
        engine.dispose()
    return 0


def cmd_projections_rebuild(args) -> int:
    """Reporting's read models folded again from its event log (the log is what it consumed):
    the same figures as before, or the figures of a fold that changed."""
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from services.reporting import handlers
    from services.reporting.repository import ReportingStore
    from shared.calendar.policy import load_policy
    from shared.persistence import db
    from shared.persistence.retention import DATABASE_DOWN

    config = settings.service_config("reporting")
    problem = _database_problem(config)
    if problem:
        return _fail(f"cannot rebuild reporting's projections: {problem}")
    engine = db.make_engine(config["DATABASE_URL"], 1)
    try:
        chain = load_policy(config.get("POLICY_FILE"))
        done = handlers.rebuild(ReportingStore(engine), rules=chain.section("reporting"),
                                now=datetime.now(timezone.utc), zone=str(handlers.chain_zone(chain)))
    except DATABASE_DOWN as exc:
        return _fail(f"reporting: database unavailable ({_first_line(exc)}); nothing rebuilt")
    except sa.exc.ProgrammingError as exc:  # a table missing: a database not migrated yet
        return _fail(f"reporting: {_first_line(exc)}; migrate it first")
    finally:
        engine.dispose()
    print(f"reporting: projections rebuilt from {done} logged event(s)")
    return 0


def cmd_retention_run(args) -> int:
    """What each service's daily timer does, at once: personal data of records closed longer than
    the policy's retention.personal_data anonymised in each service's database, and the run logged
    (retention_runs). --dry-run changes no record: it lists, and logs as a dry run, what a run
    would anonymise."""
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from shared.calendar.policy import PolicyError, load_policy
    from shared.persistence import anonymisation, db
    from shared.persistence.retention import DATABASE_DOWN

    away = False
    for service in args.service or settings.RUNNABLE_SERVICES:
        config = settings.service_config(service)
        problem = _database_problem(config)
        if problem:
            return _fail(f"cannot run the retention of {service}: {problem}")
        try:
            retention = load_policy(config["POLICY_FILE"]).retention.personal_data
        except PolicyError as exc:
            return _fail(str(exc))
        engine = db.make_engine(config["DATABASE_URL"], 1)
        try:
            report = anonymisation.run(settings.service_class(service).db.store_class(engine),
                                       importlib.import_module(f"services.{service}.retention").KINDS,
                                       service=service, retention=retention, now=datetime.now(timezone.utc),
                                       dry_run=args.dry_run)
        except DATABASE_DOWN as exc:  # the others may still answer: go on, and say so in the exit status
            print(f"closeloop: {service}: database unavailable ({_first_line(exc)}); its retention did not run",
                  file=sys.stderr)
            away = True
            continue
        except sa.exc.ProgrammingError as exc:  # a table missing: a database not migrated yet
            return _fail(f"{service}: {_first_line(exc)}; migrate it first (closeloop db upgrade {service})")
        finally:
            engine.dispose()
        for line in report.lines():
            print(line)
        print(f"{service}: logged as retention run {report.run_id}{' (dry run: nothing changed)' if args.dry_run else ''}")
    return 1 if away else 0


def _first_line(exc: Exception) -> str:
    """What the driver said, in a line."""
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]


def cmd_dev(args) -> int:
    """Everything as local processes; Ctrl-C or SIGTERM stops every one of them. --demo-clock
    DAYS: the services run on the demo clock, set DAYS + 1 days back for `closeloop demo`."""
    rc = cmd_db_upgrade(argparse.Namespace(services=None)) or cmd_bus_declare(None)
    if rc:
        return rc
    from shared.security import auth

    auth.ensure_dev_keys()
    os.environ.setdefault("CLOSELOOP_DEV_KEYS", "1")  # the children use the development keys
    days = getattr(args, "demo_clock", None)
    if days is not None:
        from demo.clock import default_path, rewind
        from shared.calendar.clock import DEMO_CLOCK_ENV

        os.environ[DEMO_CLOCK_ENV] = path = default_path()
        rewind(path, days)
        print(f"closeloop dev: the services run on the demo clock {path}, {days + 1} days back: "
              f"`closeloop demo --days N` (N up to {days}) plays a chain's history and brings it to real time",
              file=sys.stderr, flush=True)
    exe = [sys.executable, "-m", "shared.cli"]
    children = []
    for service in settings.RUNNABLE_SERVICES:
        children.append(subprocess.Popen([*exe, "serve", service]))
        children.append(subprocess.Popen([*exe, "relay", service]))
    children.append(subprocess.Popen([*exe, "serve", "console"]))  # the staff's web front end: no relay
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"closeloop dev: {len(children)} processes running; Ctrl-C stops them", file=sys.stderr, flush=True)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    failed = [c.args[-2:] for c in children if c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed and not stopping:
        return _fail(f"a process stopped on its own: {failed}")
    return 0


# -- staff accounts of the console ------------------------------------------------------------------

def _read_password(login: str) -> str | None:
    """From standard input when it is not a terminal (one line), else prompted twice; None when the
    two prompts differ or nothing was given."""
    import getpass

    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass(f"password for {login}: ")
    if getpass.getpass(f"password for {login} again: ") != first:
        print("closeloop: the two passwords differ", file=sys.stderr)
        return None
    return first


def _staff_command(action, args) -> int:
    """Runs `action(store, now)` on the console's database, saying what went wrong in a line."""
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from services.console.exceptions import StaffRefused, UnknownStaff
    from services.console.repository import ConsoleStore
    from shared.persistence import db
    from shared.persistence.retention import DATABASE_DOWN

    config = settings.service_config("console")
    problem = _database_problem(config)
    if problem:
        return _fail(f"console: {problem}")
    engine = db.make_engine(config["DATABASE_URL"], 1)
    try:
        return action(ConsoleStore(engine), datetime.now(timezone.utc))
    except StaffRefused as refused:
        print(f"closeloop: {refused}:", file=sys.stderr)
        for field, messages in refused.fields.items():
            print(f"  - {field}: {'; '.join(messages)}", file=sys.stderr)
        return 2
    except UnknownStaff as unknown:
        return _fail(f"no staff member has the login {str(unknown)!r}")
    except DATABASE_DOWN as exc:
        return _fail(f"console: database unavailable ({_first_line(exc)}); nothing changed")
    except sa.exc.ProgrammingError as exc:  # a table missing: a database not migrated yet
        return _fail(f"console: {_first_line(exc)}; migrate it first (closeloop db upgrade console)")
    finally:
        engine.dispose()


def cmd_staff_add(args) -> int:
    from services.console import handlers
    from shared.calendar.policy import PolicyError, load_policy

    try:
        policy = load_policy(os.environ.get("CLOSELOOP_POLICY_FILE") or None)
    except PolicyError as exc:
        return _fail(str(exc))
    password = _read_password(args.login)
    if password is None:
        return 2

    def add(store, now):
        member = handlers.add_staff(store, login=args.login, name=args.name, role=args.role, branch=args.branch,
                                    region=args.region, password=password, policy=policy, now=now)
        print(f"staff member {member.login} added: {member.role}, scope {member.scope_label()}")
        return 0
    return _staff_command(add, args)


def cmd_staff_disable(args) -> int:
    from services.console import handlers

    def disable(store, now):
        ended = handlers.disable_staff(store, login=args.login, now=now)
        print(f"staff member {args.login} disabled; {ended} session(s) ended")
        return 0
    return _staff_command(disable, args)


def cmd_staff_reset_password(args) -> int:
    from services.console import handlers

    password = _read_password(args.login)
    if password is None:
        return 2

    def reset(store, now):
        ended = handlers.reset_password(store, login=args.login, password=password, now=now)
        print(f"password of {args.login} changed; {ended} session(s) ended")
        return 0
    return _staff_command(reset, args)


def cmd_demo(args) -> int:
    """A simulated chain's last days through the services' HTTP APIs (demo/)."""
    from demo.clock import default_path
    from demo.run import main

    args.clock_file = args.clock_file or default_path()
    return main(args)


def _parked_queues(args) -> list[str]:
    """The queues a dlq command is about: --queue names (a handler queue, or an unroutable
    queue), --handler service.method, or every handler's dead-letter queue and every
    source's unroutable queue."""
    from shared.messaging import consumer, topology

    if args.queue:
        return [q if q.endswith((".dlq", ".unroutable")) else f"{q}.dlq" for q in args.queue]
    handlers = consumer.all_handlers()
    if args.handler:
        handlers = [h for h in handlers if h.handler in args.handler]
        if not handlers:
            raise SystemExit(_fail(f"no handler named {', '.join(args.handler)}"))
        return [h.dlq_name for h in handlers]
    return [h.dlq_name for h in handlers] + [topology.unroutable_queue_name(s) for s in settings.SERVICES]


def cmd_bus_declare(args) -> int:
    from shared.messaging import consumer, topology
    from shared.messaging.broker_admin import AdminUnavailable

    try:
        for line in topology.declare(settings.amqp_uri(), consumer.all_handlers()):
            print(line)
    except AdminUnavailable as exc:
        return _fail(f"the queues are declared, but unroutable events would be dropped: {exc}")
    return 0


def cmd_bus_users(args) -> int:
    """One broker user per service, on AMQP_URI's vhost, made with AMQP_URI's (admin) user."""
    from shared.messaging import consumer, topology
    from shared.messaging.broker_admin import AdminUnavailable, BrokerAdmin

    services = args.service or list(settings.SERVICES)
    try:
        passwords = {s: topology.bus_password(s) for s in services}
    except OSError as exc:
        return _fail(f"cannot read a password file: {exc}")
    calls = {s: topology.rpc_targets(settings.service_class(s)) for s in services if s in settings.SERVICE_CLASSES}
    prefix = os.environ.get("CLOSELOOP_BUS_USER_PREFIX", topology.USER_PREFIX)
    try:
        for line in topology.declare_users(BrokerAdmin(settings.amqp_uri()), consumer.all_handlers(),
                                           passwords, calls, prefix):
            print(line)
    except AdminUnavailable as exc:
        return _fail(str(exc))
    return 0


def cmd_dlq_list(args) -> int:
    import dataclasses
    import json

    from shared.messaging import dead_letters

    parked = dead_letters.list_parked(settings.amqp_uri(), _parked_queues(args), limit=args.limit)
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in parked], ensure_ascii=False, indent=2))
        return 0
    if not parked:
        print("no parked messages")
        return 0
    print(f"{'event id':36}  {'type':22}  {'reason':13}  {'tries':5}  {'failed at':25}  queue / error")
    for p in parked:
        print(f"{(p.event_id or '-'):36}  {(p.event_type or '-'):22}  {p.reason:13}  {p.attempts:5}  "
              f"{p.failed_at[:25]:25}  {p.dlq}\n{'':>36}  {p.error[:200]}")
    print(f"{len(parked)} parked message(s)")
    return 0


def _inbox_retention():
    from shared.calendar.policy import PolicyError, Retention, load_policy

    try:
        return load_policy(os.environ.get("CLOSELOOP_POLICY_FILE") or None).retention.inbox
    except PolicyError:
        return Retention().inbox


def _parked_before(parked, retention) -> bool:
    """Parked longer ago than `retention`: its inbox rows, if a copy was handled, are purged."""
    from datetime import datetime, timezone

    try:
        failed = datetime.fromisoformat(parked.failed_at)
    except ValueError:
        return False
    if failed.tzinfo is None:
        failed = failed.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - failed > retention


def cmd_dlq_replay(args) -> int:
    from shared.messaging import consumer, dead_letters

    if not args.all and not args.id:
        return _fail("say which: --all, or --id EVENT_ID (repeatable)")
    routes = consumer.replay_routes(consumer.all_handlers())
    inbox_retention = _inbox_retention()
    moved = kept = old = 0
    skipped: dict[str, int] = {}
    for queue in _parked_queues(args):
        report = dead_letters.replay(settings.amqp_uri(), queue, routes=routes,
                                     event_ids=None if args.all else set(args.id),
                                     include_malformed=args.include_malformed,
                                     reasons=set(args.reason) if args.reason else None)
        old += sum(1 for parked, _ in report.moved if _parked_before(parked, inbox_retention))
        for parked, targets in report.moved:
            print(f"moved {parked.event_id or '-'} {parked.event_type or '-'} ({parked.reason}) -> {', '.join(targets)}")
        for parked, why in report.kept:
            print(f"kept  {parked.event_id or '-'} {parked.event_type or '-'} in {queue}: {why}")
        moved, kept = moved + len(report.moved), kept + len(report.kept)
        for reason, count in report.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    print(f"replayed {moved} message(s)" + (f"; {kept} kept parked (see above)" if kept else ""))
    if old:
        print(f"warning: {old} of them parked longer ago than the inbox keeps handled events "
              f"({inbox_retention.days} days, the policy's retention.inbox): a handler that had already handled one "
              f"handles it again", file=sys.stderr)
    if skipped.get("malformed"):
        print(f"{skipped['malformed']} malformed message(s) left parked (--include-malformed to replay them)")
    if kept:
        return 1
    return 0 if moved or args.all else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="closeloop", description="Closeloop operations")
    sub = top.add_subparsers(dest="command", required=True)

    token = sub.add_parser("token", help="signed bearer tokens").add_subparsers(dest="action", required=True)
    issue = token.add_parser("issue", help="print a signed token (alone) on standard output")
    from shared.security.auth import ROLES

    issue.add_argument("--role", required=True, choices=ROLES)
    scope = issue.add_mutually_exclusive_group(required=True)
    scope.add_argument("--branch", help="one branch code, or '*' for every branch")
    scope.add_argument("--region", help="every branch of one region")
    issue.add_argument("--ttl", default="30d", help="lifetime, e.g. 30m, 12h, 30d (default 30d)")
    issue.add_argument("--subject", help="who the token is for (default: the role)")
    issue.add_argument("--dashboard", action="store_true", help="print the dashboard URL with the token")
    issue.set_defaults(func=cmd_token_issue)

    policy = sub.add_parser("policy", help="the chain policy file").add_subparsers(dest="action", required=True)
    check = policy.add_parser("check", help="validate a policy file (default: CLOSELOOP_POLICY_FILE or the bundled one)")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_policy_check)

    process = sub.add_parser("process", help="BPMN process files").add_subparsers(dest="action", required=True)
    check = process.add_parser("check", help="does a .bpmn file parse, use only allowed expressions, keep the "
                                             "named tasks and carry its diagram layout (exit 1 on problems)")
    check.add_argument("file")
    check.add_argument("--requires", metavar="TASK,TASK", help="user task ids that must exist (the API's)")
    check.add_argument("--operators", metavar="NAME,NAME",
                       help="the service-task operators the service registers (default: not checked)")
    check.set_defaults(func=cmd_process_check)

    keys = sub.add_parser("keys", help="development signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("ensure", help="create the development key pair if missing").set_defaults(func=cmd_keys_ensure)

    database = sub.add_parser("db", help="service databases").add_subparsers(dest="action", required=True)
    upgrade = database.add_parser("upgrade", help="create missing databases and migrate them to head")
    upgrade.add_argument("services", nargs="*")
    upgrade.set_defaults(func=cmd_db_upgrade)

    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=sorted(settings.SERVICE_CLASSES))
    serve.set_defaults(func=cmd_serve)

    relay = sub.add_parser("relay", help="run one service's outbox relay and notification sender")
    relay.add_argument("service", choices=sorted(settings.RUNNABLE_SERVICES))
    relay.add_argument("--batch-size", type=int, default=500)
    relay.add_argument("--healthcheck", action="store_true",
                       help="exit 0 if this machine's relay had a healthy round in the last 30 s")
    relay.set_defaults(func=cmd_relay)

    purge = sub.add_parser("purge", help="delete rows older than the policy's "
                                         "retention (what `relay` does hourly)")
    purge.add_argument("service", choices=sorted(settings.RUNNABLE_SERVICES))
    purge.add_argument("--batch-size", type=int, default=1000, help="rows per transaction (default 1000)")
    purge.set_defaults(func=cmd_purge)

    retention = sub.add_parser("retention", help="personal data past the policy's retention").add_subparsers(
        dest="action", required=True)
    run = retention.add_parser("run", help="anonymise personal data of records closed longer than the policy's "
                                           "retention.personal_data (what each service does daily)")
    run.add_argument("--service", action="append", choices=settings.RUNNABLE_SERVICES,
                     help="only this one (repeatable); default: every service")
    run.add_argument("--dry-run", action="store_true", help="list what would be anonymised; change nothing")
    run.set_defaults(func=cmd_retention_run)

    projections = sub.add_parser("projections", help="reporting's read models").add_subparsers(
        dest="action", required=True)
    projections.add_parser("rebuild", help="drop reporting's read models and build them again from its event "
                                           "log, in one transaction").set_defaults(func=cmd_projections_rebuild)

    bus_cmd = sub.add_parser("bus", help="the RabbitMQ topology").add_subparsers(dest="action", required=True)
    bus_cmd.add_parser("declare", help="declare every exchange, handler queue, retry queue and dead-letter "
                                       "queue (run before any producer)").set_defaults(func=cmd_bus_declare)
    users = bus_cmd.add_parser("users", help="create or update one broker user per service (closeloop-<service>), "
                                             "allowed to bind only what it consumes; passwords from "
                                             "CLOSELOOP_BUS_PASSWORD_<SERVICE>[_FILE]")
    users.add_argument("--service", action="append", choices=settings.SERVICES, help="only this one (repeatable)")
    users.set_defaults(func=cmd_bus_users)

    dlq = sub.add_parser("dlq", help="dead-lettered (parked) messages").add_subparsers(dest="action", required=True)
    for name, func, text in (("list", cmd_dlq_list, "show what is parked, why, and how often it was tried"),
                             ("replay", cmd_dlq_replay, "send parked messages back to their handler")):
        command = dlq.add_parser(name, help=text)
        command.add_argument("--handler", action="append", help="service.method (repeatable); default: all")
        command.add_argument("--queue", action="append", help="a handler queue or an unroutable queue "
                                                                 "(repeatable)")
        command.set_defaults(func=func)
    dlq.choices["list"].add_argument("--limit", type=int, default=1000)
    dlq.choices["list"].add_argument("--json", action="store_true")
    dlq.choices["replay"].add_argument("--all", action="store_true", help="every parked message")
    dlq.choices["replay"].add_argument("--id", action="append", help="an event id (repeatable)")
    dlq.choices["replay"].add_argument("--reason", action="append",
                                       help="only messages parked for this reason (failed, newer_version, "
                                            "unroutable, malformed; repeatable)")
    dlq.choices["replay"].add_argument("--include-malformed", action="store_true",
                                       help="also replay messages parked as malformed (they fail again "
                                            "unless the consumer now reads them)")

    staff = sub.add_parser("staff", help="the console's staff accounts (exit 2 on a refusal, naming every "
                                         "wrong field)").add_subparsers(dest="action", required=True)
    from services.console.policy import STAFF_ROLES

    add = staff.add_parser("add", help="add a staff member; the password is read from standard input when it is "
                                       "not a terminal, else prompted twice")
    add.add_argument("login", help="what they sign in with: lower-case letters, digits, '.', '_', '-'")
    add.add_argument("--name", required=True, help="the name the console shows")
    add.add_argument("--role", required=True, help=f"one of {', '.join(STAFF_ROLES)}")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--branch", help="one branch code of the chain policy, or '*' for every branch")
    where.add_argument("--region", help="every branch of one region of the chain policy")
    add.set_defaults(func=cmd_staff_add)
    disable = staff.add_parser("disable", help="the staff member may no longer sign in; their sessions end now")
    disable.add_argument("login")
    disable.set_defaults(func=cmd_staff_disable)
    reset = staff.add_parser("reset-password", help="set a new password (standard input or prompted twice); "
                                                   "their sessions end")
    reset.add_argument("login")
    reset.set_defaults(func=cmd_staff_reset_password)

    dev = sub.add_parser("dev", help="migrate, declare the bus, then run every service and relay locally")
    dev.add_argument("--demo-clock", nargs="?", type=int, const=30, metavar="DAYS",
                     help="run the services on the demo clock that `closeloop demo` moves (development only), "
                          "set DAYS + 1 days back (default 30)")
    dev.set_defaults(func=cmd_dev)

    env = os.environ.get
    demo = sub.add_parser("demo", help="play a plausible chain's last days through the services' HTTP APIs, on "
                                       "the demo clock (see `dev --demo-clock`), with a progress bar")
    demo.add_argument("--branches", type=int, default=env("CLOSELOOP_DEMO_BRANCHES"), metavar="N",
                      help="the policy's first N branches (default 3, or all of them when fewer; "
                           "CLOSELOOP_DEMO_BRANCHES)")
    demo.add_argument("--days", type=int, default=env("CLOSELOOP_DEMO_DAYS", "14"), metavar="D",
                      help="days of history, ending yesterday (default 14; CLOSELOOP_DEMO_DAYS)")
    for service in ("intake", "investigation", "aftercare"):
        port = env(f"{service.upper()}_PORT", str(settings.HTTP_PORTS[service]))
        demo.add_argument(f"--{service}-url", default=env(f"{service.upper()}_URL", f"http://127.0.0.1:{port}"),
                          help=f"{service}'s base URL (default http://127.0.0.1:{port}; {service.upper()}_URL)")
    demo.add_argument("--gateway", default=env("CLOSELOOP_GATEWAY_URL"), metavar="URL",
                      help="send every call through the gateway at URL instead (CLOSELOOP_GATEWAY_URL)")
    demo.add_argument("--clock-file", default=None, metavar="PATH",
                      help="the demo clock the services read (default CLOSELOOP_DEMO_CLOCK_FILE, else "
                           "closeloop-demo-clock in CLOSELOOP_RUN_DIR or the temporary directory)")
    demo.add_argument("--seed", type=int, default=env("CLOSELOOP_DEMO_SEED", "11"),
                      help="one seed plays one chain (default 11; CLOSELOOP_DEMO_SEED)")
    demo.add_argument("--patience", type=float, default=env("CLOSELOOP_DEMO_PATIENCE", "60"), metavar="SECONDS",
                      help="how long to wait for a service, or for work to show (default 60; CLOSELOOP_DEMO_PATIENCE)")
    demo.add_argument("--policy", default=env("CLOSELOOP_POLICY_FILE"),
                      help="the chain policy the services run (default CLOSELOOP_POLICY_FILE, else the bundled one)")
    demo.add_argument("--rewind-clock", action="store_true",
                      help="only set the demo clock back far enough for --days, before the services start")
    demo.set_defaults(func=cmd_demo)
    return top


def main(argv=None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    args = parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
