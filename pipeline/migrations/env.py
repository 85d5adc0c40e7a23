"""Alembic environment: the pipeline's metadata, the URL handed in by `pipeline.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from pipeline.db import make_engine
from pipeline.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by the caller"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A batch migration rebuilds a table (copy, DROP, rename); with foreign keys on,
                # dropping a referenced table fails. SQLite ignores this pragma inside a
                # transaction, so it is set before; the keys are checked after the migration.
                # On the DBAPI connection: through SQLAlchemy it would open (BEGIN) the transaction.
                cursor = connection.connection.cursor()
                cursor.execute("PRAGMA foreign_keys=OFF")
                cursor.close()
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                              compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
    finally:
        engine.dispose()


def _check_foreign_keys(connection: Connection) -> None:
    """Refuse (roll back) a migration that left a row pointing at nothing."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left {len(broken)} rows with broken foreign keys, first: {broken[0]}")


run_migrations_online()
