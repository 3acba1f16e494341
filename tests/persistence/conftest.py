"""Fixtures: every persistence test runs against SQLite and a real PostgreSQL server.

The PostgreSQL server is started once per session by `tests.pg_server` (initdb in a temp dir, as an
unprivileged user when running as root) and each test gets a fresh database in it. When no server
can be started the postgres variants skip, except in CI (`CI=true`) or with
`VA_CDS_REQUIRE_POSTGRES=1`, where that is a failure: CI must never pass on SQLite alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from cds_service.persistence import Store
from tests.pg_server import PostgresServer, PostgresUnavailable, launch_postgres


def postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("VA_CDS_REQUIRE_POSTGRES") == "1"


def no_postgres(reason: str) -> NoReturn:
    if postgres_required():
        pytest.fail(f"PostgreSQL is required here (CI / VA_CDS_REQUIRE_POSTGRES) but: {reason}")
    pytest.skip(f"no PostgreSQL server available: {reason}")


def launch_or_skip(tmp_dir: Path, *, fsync: bool = True) -> PostgresServer:
    """A server of one's own (e.g. to crash it); skips or fails as the session fixture does."""
    try:
        return launch_postgres(tmp_dir, fsync=fsync)
    except PostgresUnavailable as exc:
        no_postgres(str(exc))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    # Never crashed (the crash test starts its own server with fsync on), so fsync can be off:
    # a killed *client* still finds its committed rows, and the suite stops faster.
    server = launch_or_skip(tmp_path_factory.mktemp("pg"), fsync=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database (no schema yet) of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'va-cds.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upgrade()
    yield s
    s.close()
