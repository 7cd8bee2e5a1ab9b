"""The benchmarks' databases: made fresh for a step, their indexes set aside for a bulk load,
and settled after it."""
from __future__ import annotations

import sqlalchemy as sa

from shared.persistence import db


def fresh(url: str, service: str) -> str:
    """`url`'s database dropped if an earlier or interrupted run left it, created and migrated
    to `service`'s schema: its URL."""
    db.drop_database(url)
    db.create_database(url)
    db.migrate(service, url)
    return url


def drop_indexes(conn: sa.Connection, tables) -> list[str]:
    """Before a bulk load (COPY): the secondary indexes of `tables` dropped (not those of a
    primary key or unique constraint); their definitions, for remake_indexes."""
    indexes = conn.execute(sa.text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:tables) "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)"), {"tables": list(tables)}).all()
    for name, _ in indexes:
        conn.execute(sa.text(f'DROP INDEX "{name}"'))
    return [definition for _, definition in indexes]


def remake_indexes(conn: sa.Connection, definitions: list[str]) -> None:
    """After the load: the indexes drop_indexes dropped made again, as the migrations define them."""
    conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
    for definition in definitions:
        conn.execute(sa.text(definition))


def settle(engine: sa.Engine, tables) -> dict[str, str]:
    """After a bulk load: each table vacuumed and analysed (the planner's statistics, the
    visibility map for index-only scans), a checkpoint when the role may ask for one; each
    table's size and its indexes'."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
        try:
            conn.execute(sa.text("CHECKPOINT"))
        except sa.exc.DBAPIError:
            pass  # not a superuser: left to the server's schedule
        return {t: conn.execute(sa.text(f"SELECT pg_size_pretty(pg_table_size('{t}')) || ' + ' || "
                                        f"pg_size_pretty(pg_indexes_size('{t}'))")).scalar() for t in tables}
