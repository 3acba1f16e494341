"""Fixtures for the scale-out tests: the persistence package's PostgreSQL server and per-test databases
(SQLite and PostgreSQL variants; in CI a PostgreSQL that cannot start is a failure, not a skip)."""

from __future__ import annotations

from tests.persistence.conftest import db_url, pg_server, store

__all__ = ["db_url", "pg_server", "store"]
