"""Intake: the notification table for the sender (shared.notifications): audience, the
masked text logs may show, the requesting event, next_attempt_at (back-off and claim
lease) and failed_at; due rows indexed by next_attempt_at. Existing rows stay valid and
what waits is due at once.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

from shared.notifications import queue

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    queue.upgrade_table_v2(op)


def downgrade():
    queue.downgrade_table_v2(op)
