"""The engine's two tables, in the database of each service that runs processes.

- `process_definitions`: one row per content hash of a process spec, written once.
- `process_instances`: one row per instance (its id is the case's or visit's id), referencing
  the definition it started with. `state` is TEXT, not JSONB (see shared.workflow.state);
  `next_timer_due` is the earliest timer it waits on, indexed where set, so that finding the
  due ones among many waiting instances reads only those; `correlation_keys` are the values a
  message may name it by (its own id, and whatever the service adds: a sale id, say);
  `held_since` is set while the instance's timers are held (see ProcessEngine.hold).

Every service's metadata gets them through `add_tables`; its first migration creates them
with `create_tables_v1`, so that a later change is a new, explicit version (as for the inbox:
add_tables takes a flag for what a later version adds, and create_tables_v1 leaves it out).
Version 2 (`upgrade_tables_v2`, a service's next migration) adds `held_since`."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.workflow.errors import WorkflowError

RUNNING, COMPLETED = "running", "completed"


def add_tables(metadata: sa.MetaData, held_since: bool = True) -> dict[str, sa.Table]:
    definitions = sa.Table(
        "process_definitions", metadata,
        sa.Column("hash", sa.Text, primary_key=True),
        sa.Column("process_id", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("bpmn", sa.Text, nullable=False),  # the file as it was: the version an instance runs
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    instances = sa.Table(
        "process_instances", metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("process_id", sa.Text, nullable=False),
        sa.Column("definition_hash", sa.Text, sa.ForeignKey("process_definitions.hash"), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("next_timer_due", sa.DateTime(timezone=True)),
        sa.Column("correlation_keys", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # A timer step that failed is retried later, with growing delays, so that it never
        # holds back the instances due after it.
        sa.Column("timer_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        # Version 2: while set, the instance's timers are held (frozen at this instant) and it
        # has no next_timer_due; release moves them later by the time held.
        *([sa.Column("held_since", sa.DateTime(timezone=True))] if held_since else []),
        sa.CheckConstraint(f"status IN ('{RUNNING}', '{COMPLETED}')", name="ck_process_instances_status"),
        sa.Index("ix_process_instances_next_timer_due", "next_timer_due",
                 postgresql_where=sa.text("next_timer_due IS NOT NULL")),
        sa.Index("ix_process_instances_correlation_keys", "correlation_keys", postgresql_using="gin"),
    )
    return {"process_definitions": definitions, "process_instances": instances}


_TABLES = add_tables(sa.MetaData())
DEFINITIONS = _TABLES["process_definitions"]
INSTANCES = _TABLES["process_instances"]


def create_tables_v1(op) -> None:
    """Alembic: both tables as a service's first migration makes them."""
    metadata = sa.MetaData()
    add_tables(metadata, held_since=False)  # added by version 2
    metadata.create_all(op.get_bind())


def upgrade_tables_v2(op) -> None:
    """Alembic: `held_since` on process_instances (a service's migration after the one that
    ran create_tables_v1)."""
    op.add_column("process_instances", sa.Column("held_since", sa.DateTime(timezone=True)))


def downgrade_tables_v2(op) -> None:
    """Alembic: drop `held_since`; refused while an instance is held, as its timers would then
    never fire again (a held instance has no next_timer_due): release them first."""
    held = op.get_bind().execute(
        sa.text("SELECT count(*) FROM process_instances WHERE held_since IS NOT NULL")).scalar_one()
    if held:
        raise WorkflowError(f"{held} process instance(s) held: release them before dropping held_since "
                            "(their timers would never fire again)")
    op.drop_column("process_instances", "held_since")
