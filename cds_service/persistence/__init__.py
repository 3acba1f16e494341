"""Persistence for va-cds: audit records of hook calls and clinician feedback.

SQLite file by default, PostgreSQL when the database URL says so; the schema is managed by the
Alembic migrations packaged in `cds_service.persistence.migrations` (`Store.upgrade()`).
"""

from cds_service.persistence.store import (
    UNATTRIBUTED,
    AuditRecord,
    InvalidFeedback,
    RuleStats,
    Store,
    StoreUnavailable,
    parse_outcome_timestamp,
)

__all__ = [
    "UNATTRIBUTED",
    "AuditRecord",
    "InvalidFeedback",
    "RuleStats",
    "Store",
    "StoreUnavailable",
    "parse_outcome_timestamp",
]
