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
    add_tables(metadata, purge_index=False)  # added by a later migration: add_purge_index
    metadata.create_all(op.get_bind())


def add_purge_index(op) -> None:
    """Alembic: the index the purge needs, built without blocking writes to a big table."""
    with op.get_context().autocommit_block():
        op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"], postgresql_concurrently=True,
                        if_not_exists=True)


INBOX = add_tables(sa.MetaData())


def claim(conn: sa.Connection, handler: str, event_id: str) -> None:
    """Record the event as handled by `handler` in the current transaction, or raise
    AlreadyHandled. A concurrent twin waits on the key until the first one commits."""
    inserted = conn.execute(pg_insert(INBOX).values(handler=handler, event_id=event_id)
                            .on_conflict_do_nothing().returning(INBOX.c.event_id)).first()
    if inserted is None:
        raise AlreadyHandled(f"{handler} already handled event {event_id}")


def purge(engine: sa.Engine, older_than, batch: int = 1000, stop=None):
    """Delete inbox rows older than the policy's retention (retention.inbox), in batches. An
    event delivered again after that (a dead-letter replay of an old event) is handled again."""
    from shared.persistence.retention import purge_older

    return purge_older(engine, INBOX, INBOX.c.handled_at, older_than, batch=batch, stop=stop)
