"""The body of every service's Alembic env.py: online migrations against the URL the
caller put in the config (shared.persistence.db.migrate, `closeloop db upgrade`)."""
import sqlalchemy as sa
from alembic import context

from shared.persistence import db


def run() -> None:
    config = context.config
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    engine = db.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
