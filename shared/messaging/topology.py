"""The bus's topology: event exchanges, handler queues, retry queues, dead-letter queues
and the catch for unroutable events, named and declared exactly as nameko declares them,
for `closeloop bus declare`.

For a handler `<service>.<method>` of `<source>`'s `<type>` events:
- queue `evt-<source>-<type>--<service>.<method>`, bound to `<source>.events` with the
  type as routing key (nameko's SERVICE_POOL queue: durable, no arguments);
- `<queue>.retry.<ms>ms` per retry delay: a message waits there for its TTL, then is
  dead-lettered back to the handler queue through the default exchange;
- `<queue>.dlq`: where a message ends after its last attempt, or at once if malformed.

For each source, an event no queue is bound for (published before its consumer exists, or
for a type nobody handles yet) would be dropped by the broker. A RabbitMQ policy gives
`<source>.events` the alternate exchange `<source>.events.unroutable`, whose queue of the
same name keeps it; a policy, so the exchange's declaration stays exactly nameko's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import kombu

from shared.runtime.config import SERVICES, secret

DEFAULT_RETRY_DELAYS_MS = (1_000, 5_000, 30_000)
# The event type of a handler of every event of its source (shared.messaging.batches): its
# queue is bound with `#`.
ALL = "all"
HEADER = "x-closeloop-"
UNROUTABLE_POLICY = "closeloop-unroutable-{source}"


def retry_delays(config: dict | None = None, env=os.environ) -> tuple[int, ...]:
    if config and config.get("EVENT_RETRY_DELAYS_MS"):
        return tuple(int(d) for d in config["EVENT_RETRY_DELAYS_MS"])
    raw = env.get("CLOSELOOP_RETRY_DELAYS_MS")
    return tuple(int(d) for d in raw.split(",")) if raw else DEFAULT_RETRY_DELAYS_MS


def event_exchange(source: str) -> kombu.Exchange:
    # As nameko's get_event_exchange: topic, durable, not auto-delete, persistent.
    return kombu.Exchange(f"{source}.events", type="topic", durable=True, auto_delete=False, delivery_mode=2)


def unroutable_queue_name(source: str) -> str:
    return f"{source}.events.unroutable"


def unroutable_queue(source: str) -> kombu.Queue:
    catch = kombu.Exchange(unroutable_queue_name(source), type="fanout", durable=True, auto_delete=False)
    return kombu.Queue(unroutable_queue_name(source), exchange=catch, durable=True, auto_delete=False)


@dataclass(frozen=True)
class HandlerTopology:
    source: str
    event_type: str
    service: str
    method: str
    delays_ms: tuple[int, ...]

    @property
    def handler(self) -> str:
        return f"{self.service}.{self.method}"

    @property
    def queue_name(self) -> str:
        return f"evt-{self.source}-{self.event_type}--{self.service}.{self.method}"

    @property
    def dlq_name(self) -> str:
        return f"{self.queue_name}.dlq"

    def retry_name(self, delay_ms: int) -> str:
        return f"{self.queue_name}.retry.{delay_ms}ms"

    @property
    def max_attempts(self) -> int:
        return len(self.delays_ms) + 1

    @property
    def binding_key(self) -> str:
        return "#" if self.event_type == ALL else self.event_type

    def handles(self, event_type: str) -> bool:
        return self.event_type in (event_type, ALL)

    def queue(self) -> kombu.Queue:
        # As nameko's EventHandler with SERVICE_POOL and reliable delivery.
        return kombu.Queue(self.queue_name, exchange=event_exchange(self.source), routing_key=self.binding_key,
                           durable=True, auto_delete=False, exclusive=False)

    def side_queues(self) -> list[kombu.Queue]:
        queues = [kombu.Queue(self.retry_name(d), durable=True, auto_delete=False, queue_arguments={
            "x-message-ttl": d, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue_name})
            for d in self.delays_ms]
        return queues + [kombu.Queue(self.dlq_name, durable=True, auto_delete=False)]

    def declare(self, channel) -> None:
        self.queue()(channel).declare()
        for queue in self.side_queues():
            queue(channel).declare()


def declare(amqp_uri: str, handlers: list[HandlerTopology], sources=SERVICES, admin=None) -> list[str]:
    """Declare every exchange, handler queue, retry queue and dead-letter queue, and the
    catch for unroutable events (its policy through `admin`, a BrokerAdmin; made from the
    URI when not given). Raises broker_admin.AdminUnavailable when the policy cannot be set."""
    from shared.messaging.broker_admin import BrokerAdmin

    declared = []
    sources = sorted(set(sources) | {h.source for h in handlers})
    with kombu.Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        for source in sources:
            event_exchange(source)(channel).declare()
            unroutable_queue(source)(channel).declare()
            declared.append(f"exchange {source}.events (unroutable events kept in {unroutable_queue_name(source)})")
        for handler in handlers:
            handler.declare(channel)
            declared.append(f"queue {handler.queue_name} (+{len(handler.delays_ms)} retry, 1 dlq)")
    admin = admin or BrokerAdmin(amqp_uri)
    for source in sources:
        admin.set_exchange_policy(UNROUTABLE_POLICY.format(source=source), f"^{source}\\.events$",
                                  {"alternate-exchange": unroutable_queue_name(source)})
    declared.append(f"policy {UNROUTABLE_POLICY.format(source='<source>')} on {len(sources)} exchanges")
    return declared


# -- broker users: each service binds only what it consumes -----------------------------------------

RPC_EXCHANGE = "nameko-rpc"  # nameko's default
REPLY_KEY = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # a reply queue's uuid


def _any(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$" if patterns else "^$"


def _escaped(name: str) -> str:
    return name.replace(".", r"\.").replace("-", r"\-")


@dataclass(frozen=True)
class BrokerUser:
    """One service's RabbitMQ permissions in a vhost: the regexes of vhost permissions and,
    for each topic exchange it may touch, (write, read) routing-key regexes. RabbitMQ checks
    the read one on queue.bind, so a service cannot bind a key it does not consume."""

    service: str
    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]]


def broker_user(service: str, handlers: list[HandlerTopology], rpc_targets=()) -> BrokerUser:
    """What a nameko service needs and nothing more:
    - its handler queues (`evt-<source>-<type>--<service>.<method>`) with their retry and
      dead-letter queues, bound to `<source>.events` by the types it handles only;
    - its RPC queue `rpc-<service>`, bound to nameko-rpc by `<service>.*` only, and its reply
      queues `rpc.reply-<service>-<uuid>`, bound by their uuid;
    - publishing to `<service>.events` (any type), to nameko-rpc (calls to
      `rpc_targets` and replies by uuid) and to the default exchange (retry and dead-letter copies).
    Exchanges are in configure because nameko and kombu (re)declare them when they start."""
    mine = [h for h in handlers if h.service == service]
    consumed: dict[str, set[str]] = {}
    for h in mine:
        consumed.setdefault(h.source, set()).add(h.event_type)
    queues = [rf"evt\-[a-z_]+\-[a-z_]+\-\-{_escaped(service)}\.[a-z_]+(\.retry\.[0-9]+ms|\.dlq)?",
              rf"rpc\-{_escaped(service)}", rf"rpc\.reply\-{_escaped(service)}\-{REPLY_KEY}"]
    own_events = _escaped(f"{service}.events")
    sources = [_escaped(f"{source}.events") for source in sorted(consumed)]
    rpc = _escaped(RPC_EXCHANGE)
    topics = {f"{source}.events": ("^$", _any(*(r"\#" if t == ALL else _escaped(t) for t in sorted(types))))
              for source, types in consumed.items()}
    own = topics.get(f"{service}.events", ("", "^$"))[1]
    topics[f"{service}.events"] = (".*", own)
    calls = [rf"{_escaped(target)}\.[a-z_]+" for target in sorted(set(rpc_targets))]
    topics[RPC_EXCHANGE] = (_any(REPLY_KEY, *calls), _any(rf"{_escaped(service)}\.\*", REPLY_KEY))
    return BrokerUser(
        service=service,
        configure=_any(*queues, rpc, own_events, *sources),
        write=_any(*queues, rpc, own_events, r"amq\.default"),  # the unroutable catch needs none
        read=_any(*queues, rpc, *sources),
        topics=topics)


def rpc_targets(service_class) -> list[str]:
    """The services a nameko service class calls through RpcProxy dependencies."""
    from nameko.rpc import RpcProxy

    return sorted({value.target_service for value in vars(service_class).values() if isinstance(value, RpcProxy)})


USER_PREFIX = "closeloop-"


def bus_password(service: str, env=os.environ) -> str | None:
    """CLOSELOOP_BUS_PASSWORD_<SERVICE>, or the first line of the file ..._FILE names."""
    given = secret(f"CLOSELOOP_BUS_PASSWORD_{service.upper()}", env)
    if given is None:
        return None
    first_line = given.decode("utf-8").partition("\n")[0].rstrip("\r")
    return first_line or None


def declare_users(admin, handlers: list[HandlerTopology], passwords: dict[str, str | None],
                  calls: dict[str, list[str]], prefix: str = USER_PREFIX) -> list[str]:
    """Create or update `<prefix><service>` for each service with a password, on the admin's
    vhost. Returns what was done, without passwords."""
    done = []
    for service, password in sorted(passwords.items()):
        if not password:
            done.append(f"user {prefix}{service}: skipped (no CLOSELOOP_BUS_PASSWORD_{service.upper()}[_FILE])")
            continue
        user = broker_user(service, handlers, calls.get(service, ()))
        admin.ensure_user(prefix + service, password, configure=user.configure, write=user.write,
                          read=user.read, topics=user.topics)
        bound = ", ".join(f"{exchange} by {read}" for exchange, (_, read) in sorted(user.topics.items()))
        done.append(f"user {prefix}{service}: binds {bound}")
    return done
