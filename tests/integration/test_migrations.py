"""Each service's migrations build exactly the tables its models describe."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.aftercare import models as aftercare_models
from services.intake import models
from services.investigation import models as investigation_models
from services.reporting import models as reporting_models

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service, metadata", [("intake", models.metadata),
                                               ("investigation", investigation_models.metadata),
                                               ("aftercare", aftercare_models.metadata),
                                               ("reporting", reporting_models.metadata)])
def test_each_service_s_migrations_match_its_models(database_factory, service, metadata):
    engine = sa.create_engine(database_factory(service))
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    # alembic_version is the migrations' own table; anything else is drift.
    drift = [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert drift == []


def test_intake_0003_keeps_queued_notifications_valid(infra):
    """Rows the relay queued before 0003: what waits is due at once, what it had given up
    on (every attempt used) is marked failed, and all of them are customer messages."""
    import uuid

    from shared.persistence import db
    from shared.runtime.config import with_database
    from shared.testing.fixtures import RUN_ID, drop_at_exit

    url = with_database(infra.database_url, f"cltest_{RUN_ID}_intake_mig_{uuid.uuid4().hex[:8]}")
    db.create_database(url)
    drop_at_exit(url)
    db.migrate("intake", url, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO notifications (channel, recipient, language, body, subject_id, attempts, sent_at) VALUES "
            "('sms', '13812346138', 'zh', 'waiting', 'c1', 2, NULL), "
            "('sms', '13812346138', 'zh', 'exhausted', 'c2', 16, NULL), "
            "('sms', '13812346138', 'zh', 'sent', 'c3', 1, now())"))
    db.migrate("intake", url)
    with engine.connect() as conn:
        rows = {r.body: r for r in conn.execute(sa.text(
            "SELECT body, audience, log_text, next_attempt_at <= now() AS due, failed_at FROM notifications"))}
    engine.dispose()
    assert {body: (r.audience, r.log_text, r.due, r.failed_at is not None) for body, r in rows.items()} == {
        "waiting": ("customer", None, True, False), "exhausted": ("customer", None, True, True),
        "sent": ("customer", None, True, False)}
