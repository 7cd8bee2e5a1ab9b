"""Intake: a customer looked up by phone (POST /v1/customers/lookup) finds their complaints and
sales through an index on (customer_ref, newest first): the reference's rows, already in the
answer's order, so a look-up reads at most the 51 rows it needs, however big the branch. The
complaints' index on customer_ref alone (0001) is the new one's leading column: dropped.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    # Built (and the old one dropped) without blocking the tills' posts on a big table.
    with op.get_context().autocommit_block():
        op.create_index("ix_complaints_customer_received", "complaints",
                        ["customer_ref", sa.text("received_at DESC"), sa.text("id DESC")],
                        postgresql_concurrently=True, if_not_exists=True)
        op.create_index("ix_sales_customer_sold", "sales",
                        ["customer_ref", sa.text("sold_at DESC"), sa.text("id DESC")],
                        postgresql_concurrently=True, if_not_exists=True)
        op.drop_index("ix_complaints_customer_ref", table_name="complaints", postgresql_concurrently=True,
                      if_exists=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.create_index("ix_complaints_customer_ref", "complaints", ["customer_ref"], postgresql_concurrently=True,
                        if_not_exists=True)
        op.drop_index("ix_sales_customer_sold", table_name="sales", postgresql_concurrently=True, if_exists=True)
        op.drop_index("ix_complaints_customer_received", table_name="complaints", postgresql_concurrently=True,
                      if_exists=True)
