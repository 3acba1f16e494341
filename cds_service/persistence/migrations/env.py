"""Alembic environment: runs migrations on the connection `Store.upgrade()` hands over.

`Store.upgrade()` builds the alembic Config in code and puts an open connection (already inside a
transaction) into `config.attributes["connection"]`, so migrations share the Store's engine
settings (SQLite pragmas, psycopg driver). Running alembic's CLI directly is also supported for
developers: it then needs `-x url=...` or `VA_CDS_DATABASE_URL`.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from cds_service.persistence.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables for future migrations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("VA_CDS_DATABASE_URL")
    if not url:
        raise RuntimeError("pass -x url=... or set VA_CDS_DATABASE_URL (or use `va-cds db upgrade`)")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use `va-cds db upgrade`")
run_migrations_online()
