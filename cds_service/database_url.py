"""The one default database URL (`./var/va-cds.db`) and the checks the commands make around it.

`serve`, `db upgrade`, `report` and `evaluate` all read `VA_CDS_DATABASE_URL`, defaulting to the same SQLite
file, so a report run after `make serve` reads what the service wrote. Writing commands create the file's
folder; read-only commands never create a file (SQLite would otherwise leave an empty database behind) and
say which URL they opened and what to run when there is nothing to read yet.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cds_service.settings import DEFAULT_DATABASE_URL


def sqlite_file(url: str) -> Path | None:
    """The file of a file-backed SQLite URL; None for an in-memory SQLite or any other database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # URI form: sqlite:///file:path?mode=...&uri=true
        return None
    return Path(parsed.database)


def ensure_folder(url: str) -> None:
    """Create the folder of a SQLite database file (for commands that write: serve, db upgrade).

    A folder that cannot be made is left to the database open that follows, which names the problem.
    """
    path = sqlite_file(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass


def unreadable_reason(url: str) -> str | None:
    """Why a read-only command finds nothing to read at `url` (no file, or no va-cds schema); else None.

    Creates no file. Connection problems are left to the command itself, which reports them.
    """
    shown = _shown(url)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return f"no database at {shown} (the file {path.resolve()} does not exist)"
    try:
        engine = sa.create_engine(make_url(url).set(drivername=_driver(url)))
    except (ArgumentError, ImportError, ValueError):
        return None
    try:
        with engine.connect() as conn:
            migrated = sa.inspect(conn).has_table("alembic_version")
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return None if migrated else f"the database at {shown} has no va-cds schema"


def upgrade_hint(url: str) -> str:
    """The command that creates the schema at `url`."""
    if url == DEFAULT_DATABASE_URL:
        return "run `va-cds db upgrade` (or start the service once with `make serve`)"
    return f"run `va-cds db upgrade --database-url {_shown(url)}`"


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _driver(url: str) -> str:
    # Bare postgresql:// would pick psycopg2, which va-cds does not ship (the Store does the same).
    name = make_url(url).drivername
    return "postgresql+psycopg" if name in ("postgresql", "postgres") else name
