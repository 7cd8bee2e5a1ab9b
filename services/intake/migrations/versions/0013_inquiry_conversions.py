"""Intake: inquiries (consultations, 咨询) are registered beside complaints, suggestions and praise
(kind is free text: nothing to change for them), and one that proves to be a complaint is converted
into one (POST /v1/complaints/{id}/convert): its kind before, when, by whom and why. Nullable
columns without defaults: added without rewriting the table.

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_COLUMNS = (("converted_from", sa.Text), ("converted_at", sa.DateTime(timezone=True)), ("converted_by", sa.Text),
            ("conversion_note", sa.Text))


def upgrade():
    for name, kind in _COLUMNS:
        op.add_column("complaints", sa.Column(name, kind))


def downgrade():
    for name, _ in reversed(_COLUMNS):
        op.drop_column("complaints", name)
