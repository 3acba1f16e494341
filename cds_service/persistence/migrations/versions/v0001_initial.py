"""Initial schema: audit, audit_card, feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written out by hand rather than importing `tables.py`: a migration must keep describing the schema
as it was at this revision even after the table definitions move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(64), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(100), nullable=False),
        sa.Column("received_at", _Timestamp, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("patient_hash", sa.String(128), nullable=True),
        sa.Column("fhir_outcomes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_hook_instance", "audit", ["hook_instance"])
    op.create_index("ix_audit_received_at", "audit", ["received_at"])

    op.create_table(
        "audit_card",
        sa.Column("uuid", sa.String(64), nullable=False),
        sa.Column("audit_id", _BigId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("indicator", sa.String(20), nullable=False),
        sa.Column("suggestions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name="pk_audit_card"),
        sa.ForeignKeyConstraint(
            ["audit_id"], ["audit.id"], name="fk_audit_card_audit_id_audit", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_audit_card_audit_id", "audit_card", ["audit_id"])
    op.create_index("ix_audit_card_rule_id", "audit_card", ["rule_id"])

    op.create_table(
        "feedback",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("card", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=True),
        sa.Column("reason_system", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.Text(), nullable=True),
        sa.Column("reason_display", sa.Text(), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.Column("outcome_timestamp", sa.Text(), nullable=False),
        sa.Column("outcome_at", _Timestamp, nullable=False),
        sa.Column("received_at", _Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("service", "card", "outcome", "outcome_at", name="uq_feedback_idempotency"),
    )
    op.create_index("ix_feedback_card", "feedback", ["card"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("audit_card")
    op.drop_table("audit")
