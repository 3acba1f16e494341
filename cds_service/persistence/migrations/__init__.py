"""Alembic migrations for the va-cds database, packaged so `Store.upgrade()` needs no alembic.ini."""
