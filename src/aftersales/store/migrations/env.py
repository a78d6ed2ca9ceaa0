"""Alembic environment: runs against the engine `store.db.upgrade` hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from aftersales.store.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic command line: take the URL from the settings
    import os

    from aftersales.store.db import DEFAULT_URL, normalise_url

    engine = create_engine(normalise_url(os.environ.get("AFTERSALES_DATABASE_URL", DEFAULT_URL)))

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
