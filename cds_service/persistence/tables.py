"""Table definitions (SQLAlchemy Core) for the audit trail and clinician feedback.

These describe the *current* schema for queries and for `alembic revision --autogenerate`; the
schema itself is created only by the migrations in `cds_service.persistence.migrations`, so a
change here must come with a new migration.

Only portable types are used (JSON via `sqlalchemy.JSON`, timestamps through `UTCDateTime`) so the
same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    # Deterministic constraint names: migrations on both dialects can refer to them by name.
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not a BIGINT one.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    PostgreSQL keeps the instant (`timestamptz`); SQLite has no time zone type, so the value is
    stored as naive UTC text. Normalising on the way in keeps comparisons (`--since`) and the
    feedback idempotency key correct on both: the same instant written with different offsets is
    the same stored value. Naive inputs are taken to be UTC, as CDS Hooks timestamps are.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


audit = sa.Table(
    "audit",
    metadata,
    # A surrogate key rather than hookInstance: the spec says hookInstance is unique per event, but
    # clients are known to reuse it (cds-hooks/docs#499) and an audit row must never be refused.
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("hook_instance", sa.String(64), nullable=False, index=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("hook", sa.String(100), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("patient_hash", sa.String(128), nullable=True),
    sa.Column("fhir_outcomes", sa.JSON(), nullable=False),
    # Who received the cards: the JWT issuer and tenant ('' when authentication is off / no tenant).
    # Feedback is bound to them, and alert memory never crosses them (migration 0003).
    sa.Column("issuer", sa.String(500), nullable=False, server_default=""),
    sa.Column("tenant", sa.String(200), nullable=False, server_default=""),
    # The alert-memory lookup: one index range per hook call (cds_service.memory).
    sa.Index("ix_audit_memory", "patient_hash", "issuer", "tenant", "received_at"),
)

audit_card = sa.Table(
    "audit_card",
    metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("audit_id", BigId, sa.ForeignKey("audit.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("rule_id", sa.String(200), nullable=False),
    sa.Column("indicator", sa.String(20), nullable=False),
    sa.Column("suggestions", sa.JSON(), nullable=False),
    # Evidence fingerprint of the card as the rule built it (before memory changed anything).
    sa.Column("fingerprint", sa.String(64), nullable=True),
    # What alert memory did, comma-joined: demoted, suggestion-withheld, noted, omitted. NULL: nothing.
    # An "omitted" card was not shown: it is kept so the report can count what memory spared.
    sa.Column("memory", sa.String(60), nullable=True),
    # Stable keys of the suggestions, aligned with `suggestions` (uuids are new on every call).
    sa.Column("suggestion_keys", sa.JSON(), nullable=True),
    # Alert memory fetches each audit row's cards of the rules asked about. Deliberately no index on
    # rule_id alone (migration 0006): PostgreSQL without statistics, or in a generic plan, probed it once
    # per audit row — every card of the rule, of every patient — instead of the row's own cards.
    sa.Index("ix_audit_card_audit_rule", "audit_id", "rule_id"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("service", sa.String(200), nullable=False),
    # No foreign key to audit_card: feedback for a card we have no audit row for (audit write failed,
    # audit purged, another instance) must still be kept — acknowledged feedback is never lost.
    sa.Column("card", sa.String(200), nullable=False, index=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("accepted_suggestions", sa.JSON(), nullable=True),
    # Client-supplied text is unbounded (Text): a length error would turn into a 503 the EHR retries forever.
    sa.Column("reason_system", sa.Text(), nullable=True),
    sa.Column("reason_code", sa.Text(), nullable=True),
    sa.Column("reason_display", sa.Text(), nullable=True),
    sa.Column("user_comment", sa.Text(), nullable=True),
    sa.Column("outcome_timestamp", sa.Text(), nullable=False),
    sa.Column("outcome_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    # Who sent it (as on `audit`): feedback counts only for a card that issuer/tenant received.
    sa.Column("issuer", sa.String(500), nullable=False, server_default=""),
    sa.Column("tenant", sa.String(200), nullable=False, server_default=""),
    # The idempotency key: a client may report the same outcome several times (spec §Feedback). The caller
    # is part of it, so another issuer's report about a card can never make the genuine one a duplicate.
    sa.UniqueConstraint(
        "service", "issuer", "tenant", "card", "outcome", "outcome_at", name="uq_feedback_idempotency"
    ),
)
