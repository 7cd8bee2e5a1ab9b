"""The notification queue: messages to customers and to staff, written in the same
transaction as what they are about, sent afterwards by the sender (sender.py).

Every service's metadata gets the table through `add_tables`. Migrations build it in
explicit versions: `create_table_v1` (what intake's first migration made) then
`upgrade_table_v2` (the sender's columns), so a later change is a new version too.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.security.auth import ROLES

CUSTOMER_CHANNELS = ("sms", "wechat", "email")
STAFF_CHANNEL = "staff"
AUDIENCES = ("customer", "staff")
MAX_ATTEMPTS = 16


def add_tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    notifications = sa.Table(
        "notifications", metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        # A customer's contact in clear (only intake queues those), or a staff address.
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("subject_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("audience", sa.Text, nullable=False, server_default="customer"),
        sa.Column("log_text", sa.Text),  # what logs may show; NULL: the text is withheld
        sa.Column("request_event_id", pg.UUID(as_uuid=False)),
        # The next try, and while a sender holds the row, the end of its lease.
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("failed_at", sa.DateTime(timezone=True)),  # given up
        sa.Index("ix_notifications_due", "next_attempt_at", "id",
                 postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL")),
        sa.Index("ix_notifications_failed", "failed_at", postgresql_where=sa.text("failed_at IS NOT NULL")),
        # The retention purge's: sent or given up, oldest first.
        sa.Index("ix_notifications_done_at", sa.text("coalesce(sent_at, failed_at)")),
    )
    return {"notifications": notifications}


NOTIFICATIONS = add_tables(sa.MetaData())["notifications"]


# --- migrations ---------------------------------------------------------------------------

def create_table_v1(op) -> None:
    """Alembic: the table as intake's first migration made it (sent by the relay)."""
    metadata = sa.MetaData()
    sa.Table(
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
    metadata.create_all(op.get_bind())


def upgrade_table_v2(op, max_attempts: int = MAX_ATTEMPTS) -> None:
    """Alembic: version 1 -> 2, for the sender. Existing rows stay valid: every new column
    has a default or is nullable; what is waiting is due at once; what the relay had
    given up on (every attempt used) is marked failed."""
    op.add_column("notifications", sa.Column("audience", sa.Text, nullable=False, server_default="customer"))
    op.add_column("notifications", sa.Column("log_text", sa.Text))
    op.add_column("notifications", sa.Column("request_event_id", pg.UUID(as_uuid=False)))
    op.add_column("notifications", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False,
                                             server_default=sa.func.now()))
    op.add_column("notifications", sa.Column("failed_at", sa.DateTime(timezone=True)))
    op.execute(sa.text("UPDATE notifications SET failed_at = now() "
                       "WHERE sent_at IS NULL AND attempts >= :m").bindparams(m=max_attempts))
    op.drop_index("ix_notifications_unsent", table_name="notifications")
    op.create_index("ix_notifications_due", "notifications", ["next_attempt_at", "id"],
                    postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL"))
    op.create_index("ix_notifications_failed", "notifications", ["failed_at"],
                    postgresql_where=sa.text("failed_at IS NOT NULL"))


def downgrade_table_v2(op) -> None:
    op.drop_index("ix_notifications_failed", table_name="notifications")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.create_index("ix_notifications_unsent", "notifications", ["id"], postgresql_where=sa.text("sent_at IS NULL"))
    for column in ("failed_at", "next_attempt_at", "request_event_id", "log_text", "audience"):
        op.drop_column("notifications", column)


# --- messages -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CustomerMessage:
    """A message to a customer. Only intake, the holder of customers' contacts, queues these;
    other services ask for one with a `customer_message_requested` event."""
    channel: str                         # sms, wechat, email
    recipient: str                       # the contact in clear: it stays in intake's database
    language: str
    body: str                            # what the customer reads (may greet them by name)
    subject_id: str                      # what it is about (a complaint id, a sale id)
    log_text: str | None = None          # what logs may show (names and numbers masked); None: withheld
    request_event_id: str | None = None  # the bus event that asked for it, for the outcome hook

    def __post_init__(self):
        if self.channel not in CUSTOMER_CHANNELS:
            raise ValueError(f"unknown customer channel {self.channel!r}; channels: {', '.join(CUSTOMER_CHANNELS)}")
        if not self.recipient:
            raise ValueError("a customer message needs a recipient")


@dataclass(frozen=True)
class StaffMessage:
    """A message to staff (an escalation, an approval waiting): addressed to a role in a
    scope, never to a person's contact. Exactly one of branch / region, or neither for
    every branch. The text is written for staff from masked data, so logs may show it."""
    role: str
    subject_id: str                      # the case, visit or task it is about
    text: str
    branch: str | None = None
    region: str | None = None
    language: str = "zh"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; roles: {', '.join(ROLES)}")
        if self.branch is not None and self.region is not None:
            raise ValueError("a staff message addresses one branch, one region, or every branch: not both")
        if self.branch == "" or self.region == "":
            raise ValueError("an empty branch or region: leave it None to address every branch")

    @property
    def address(self) -> str:
        """`role:store_manager;branch:SH001`, `role:regional_manager;region:east`, `role:hq_admin`."""
        if self.branch is not None:
            return f"role:{self.role};branch:{self.branch}"
        if self.region is not None:
            return f"role:{self.role};region:{self.region}"
        return f"role:{self.role}"


def parse_staff_address(address: str) -> dict:
    """{"role": ..., "branch": ... or None, "region": ... or None}: for a staff adapter."""
    parts = dict(part.split(":", 1) for part in address.split(";") if ":" in part)
    return {"role": parts.get("role"), "branch": parts.get("branch"), "region": parts.get("region")}


def message_row(message: CustomerMessage | StaffMessage) -> dict:
    """The notifications row of a message (plain values), for the unit of work's insert."""
    if isinstance(message, CustomerMessage):
        return {"audience": "customer", "channel": message.channel, "recipient": message.recipient,
                "language": message.language, "body": message.body, "subject_id": message.subject_id,
                "log_text": message.log_text, "request_event_id": message.request_event_id}
    if isinstance(message, StaffMessage):
        return {"audience": "staff", "channel": STAFF_CHANNEL, "recipient": message.address,
                "language": message.language, "body": message.text, "subject_id": message.subject_id,
                "log_text": message.text, "request_event_id": None}
    raise TypeError(f"not a message: {type(message).__name__} (use CustomerMessage or StaffMessage)")


def state(conn: sa.Connection) -> dict:
    """What waits to be sent, and what was given up (both served by partial indexes)."""
    row = conn.execute(sa.text(
        "SELECT (SELECT count(*) FROM notifications WHERE sent_at IS NULL AND failed_at IS NULL), "
        "(SELECT count(*) FROM notifications WHERE failed_at IS NOT NULL)")).one()
    return {"notifications_pending": int(row[0]), "notifications_failed": int(row[1])}
