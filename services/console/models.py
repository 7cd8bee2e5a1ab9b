"""The console's tables (SQLAlchemy Core): staff accounts, sessions, failed sign-ins. The console
keeps no record of the other services: it reads and writes them through their APIs."""
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()
TZ = sa.DateTime(timezone=True)

# A staff member: signs in with `login` (lower case), works as `role` in a scope of one branch,
# one region or the whole chain (`scope_kind` branch|region|all, `scope_value` the code or name).
staff = sa.Table(
    "staff", metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("login", sa.Text, nullable=False, unique=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("scope_kind", sa.Text, nullable=False),
    sa.Column("scope_value", sa.Text),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("password_changed_at", TZ, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.CheckConstraint("scope_kind IN ('branch', 'region', 'all')", name="ck_staff_scope_kind"),
    sa.CheckConstraint("(scope_kind = 'all') = (scope_value IS NULL)", name="ck_staff_scope_value"),
)

# A browser's session: the cookie holds a random id, the table only its SHA-256 (a copy of the
# table signs nobody in). `staff_id` NULL: a sign-in form's session of an earlier version (a
# browser not signed in now has nothing stored; these are purged). Ended sessions are deleted.
sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("staff_id", pg.UUID(as_uuid=False), sa.ForeignKey("staff.id", ondelete="CASCADE")),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("last_seen_at", TZ, nullable=False),
    sa.Column("expires_at", TZ, nullable=False),  # absolute: created_at + the lifetime of its kind
    sa.Index("ix_sessions_staff", "staff_id"),
    sa.Index("ix_sessions_expires", "expires_at"),
)

# Failed sign-ins per login name (`login:<name>`) and per client address (`address:<ip>`).
login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("first_failed_at", TZ, nullable=False),
    sa.Column("last_failed_at", TZ, nullable=False),
    sa.Column("locked_until", TZ),
)
