"""Each service's migrations build exactly the tables its models describe."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.intake import models

pytestmark = pytest.mark.integration


def test_intake_migrations_match_its_models(database_factory):
    engine = sa.create_engine(database_factory("intake"))
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), models.metadata)
    engine.dispose()
    # alembic_version is the migrations' own table; anything else is drift.
    drift = [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert drift == []
