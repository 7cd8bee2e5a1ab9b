"""The transactional outbox: events written in the same transaction as the state change,
published afterwards by the relay. (Messages to customers and staff have their own queue
and sender: shared.notifications.)

Every service's metadata gets the table through `add_tables`; migrations create it
with `create_tables_v1` so that a later change to the shape is a new, explicit version.
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.messaging.envelope import ValidatedEvent
from shared.notifications import queue


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
    return {"outbox": outbox}


def create_tables_v1(op) -> None:
    """Alembic: the outbox and, as version 1 had it, the notification table beside it
    (shared.notifications.queue upgrades that one)."""
    metadata = sa.MetaData()
    add_tables(metadata)
    metadata.create_all(op.get_bind())
    queue.create_table_v1(op)


_metadata = sa.MetaData()
_tables = add_tables(_metadata)
OUTBOX = _tables["outbox"]


def event_row(envelope: ValidatedEvent) -> dict:
    """The outbox row of an event; only events that passed their schema have one."""
    if not isinstance(envelope, ValidatedEvent):
        raise TypeError("only events made by shared.messaging.envelope.build_event can be published")
    return {"event_id": envelope["event_id"], "exchange": f"{envelope['source']}.events",
            "routing_key": envelope["type"], "body": json.dumps(envelope, ensure_ascii=False)}


def lag(conn: sa.Connection) -> dict:
    """What is waiting to be published: how many events, and how old the oldest is."""
    row = conn.execute(sa.text(
        "SELECT count(*), EXTRACT(EPOCH FROM (now() - min(created_at))) "
        "FROM outbox WHERE sent_at IS NULL")).one()
    return {"pending": int(row[0]), "oldest_age_seconds": float(row[1] or 0.0)}

