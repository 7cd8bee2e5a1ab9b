"""The inbox: one row per (handler, event_id), written in the handler's own transaction,
so a redelivered event has exactly one effect."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert


class AlreadyHandled(Exception):
    """This handler has already handled this event: the delivery is a duplicate."""


def add_tables(metadata: sa.MetaData, purge_index: bool = True) -> sa.Table:
    return sa.Table(
        "inbox", metadata,
        sa.Column("handler", sa.Text, primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # The purge finds its oldest rows through this, never by scanning the table.
        *([sa.Index("ix_inbox_handled_at", "handled_at")] if purge_index else []),
    )


def create_tables_v1(op) -> None:
    metadata = sa.MetaData()
    add_tables(metadata, purge_index=False)  # added by a later migration (intake's 0006)
    metadata.create_all(op.get_bind())


INBOX = add_tables(sa.MetaData())


def claim(conn: sa.Connection, handler: str, event_id: str) -> None:
    """Record the event as handled by `handler` in the current transaction, or raise
    AlreadyHandled. A concurrent twin waits on the key until the first one commits."""
    inserted = conn.execute(pg_insert(INBOX).values(handler=handler, event_id=event_id)
                            .on_conflict_do_nothing().returning(INBOX.c.event_id)).first()
    if inserted is None:
        raise AlreadyHandled(f"{handler} already handled event {event_id}")
