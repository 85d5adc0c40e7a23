"""The database schema for the CLI, the worker and the embedded stack: install it, check it.

Its own module so that `paratro.cli` and `workers.stack` both use it without importing each other.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from pipeline.db import NOT_MIGRATED, get_database, translate_db_error
from pipeline.errors import ConfigurationError, SchemaNotMigrated
from pipeline.settings import get_settings


def install_schema() -> None:
    """Alembic upgrade of the pipeline's tables, then the local signer's own tables."""
    from pipeline.migrate import upgrade
    from signer.local import SignerBase

    url = get_settings().database_url
    upgrade(url)
    SignerBase.metadata.create_all(get_database(url).engine)


def check_schema(url: str) -> None:
    """Raise SchemaNotMigrated unless the database is at the migrations' head and has the signer's
    tables; DatabaseUnavailable if it cannot be reached; ConfigurationError if it is at a revision
    this code does not know (migrated by a newer version)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from pipeline.migrate import alembic_config
    from signer.local import SignerBase

    engine = get_database(url).engine
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
            tables = set(inspect(connection).get_table_names())
    except DBAPIError as exc:
        mapped = translate_db_error(exc)
        raise mapped from (None if mapped is exc else exc)
    script = ScriptDirectory.from_config(alembic_config(url))
    heads = set(script.get_heads())
    if current == heads and set(SignerBase.metadata.tables) <= tables:
        return
    known = {revision.revision for revision in script.walk_revisions()}
    if current - known:
        raise ConfigurationError(f"database schema is at revision {', '.join(sorted(current - known))}, unknown to "
                                 f"this version of paratro (head {', '.join(sorted(heads))}): upgrade paratro")
    at = ", ".join(sorted(current)) or "no revision"
    raise SchemaNotMigrated(f"{NOT_MIGRATED} (the database is at {at}, this version needs {', '.join(sorted(heads))})")
