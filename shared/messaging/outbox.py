"""The transactional outbox: events and customer notifications written in the same
transaction as the state change, delivered afterwards by the relay.

Every service's metadata gets these tables through `add_tables`; migrations create them
with `create_tables_v1` so that a later change to the shape is a new, explicit version.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging.envelope import ValidatedEvent


def add_tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    outbox = sa.Table(
        "outbox", metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=False), nullable=False, unique=True),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Index("ix_outbox_unsent", "id", postgresql_where=sa.text("sent_at IS NULL")),
    )
    notifications = sa.Table(
        "notifications", metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("subject_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Index("ix_notifications_unsent", "id", postgresql_where=sa.text("sent_at IS NULL")),
    )
    return {"outbox": outbox, "notifications": notifications}


def create_tables_v1(op) -> None:
    """Alembic: the outbox and notification tables, version 1."""
    metadata = sa.MetaData()
    add_tables(metadata)
    metadata.create_all(op.get_bind())


_metadata = sa.MetaData()
_tables = add_tables(_metadata)
OUTBOX = _tables["outbox"]
NOTIFICATIONS = _tables["notifications"]


@dataclass(frozen=True)
class Notification:
    channel: str          # sms, wechat, email
    recipient: str        # the contact in clear: it stays in the owning service's database
    language: str
    body: str
    subject_id: str       # what it is about (a complaint id, a case id)


def event_row(envelope: ValidatedEvent) -> dict:
    """The outbox row of an event; only events that passed their schema have one."""
    if not isinstance(envelope, ValidatedEvent):
        raise TypeError("only events made by shared.messaging.envelope.build_event can be published")
    return {"event_id": envelope["event_id"], "exchange": f"{envelope['source']}.events",
            "routing_key": envelope["type"], "body": json.dumps(envelope, ensure_ascii=False)}


def notification_row(notification: Notification) -> dict:
    return {"channel": notification.channel, "recipient": notification.recipient,
            "language": notification.language, "body": notification.body, "subject_id": notification.subject_id}


def lag(conn: sa.Connection) -> dict:
    """What is waiting to be published: how many events, and how old the oldest is."""
    row = conn.execute(sa.text(
        "SELECT count(*), EXTRACT(EPOCH FROM (now() - min(created_at))) "
        "FROM outbox WHERE sent_at IS NULL")).one()
    return {"pending": int(row[0]), "oldest_age_seconds": float(row[1] or 0.0)}


MAX_NOTIFICATION_ATTEMPTS = 16


def notification_state(conn: sa.Connection, max_attempts: int = MAX_NOTIFICATION_ATTEMPTS) -> dict:
    row = conn.execute(sa.text(
        "SELECT count(*) FILTER (WHERE attempts < :m), count(*) FILTER (WHERE attempts >= :m) "
        "FROM notifications WHERE sent_at IS NULL"), {"m": max_attempts}).one()
    return {"notifications_pending": int(row[0]), "notifications_failed": int(row[1])}
