"""Checklist snapshots for the pre-procedure checklist page (issue 10).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Written out by hand (not from `cds_service.checklist.storage`) so this revision keeps describing the
table as it was created even if the definition moves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "checklist_snapshot",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("hook_instance", sa.String(64), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(100), nullable=False),
        sa.Column("card_uuid", sa.String(64), nullable=True),
        sa.Column("created_at", _Timestamp, nullable=False),
        sa.Column("expires_at", _Timestamp, nullable=False),
        sa.Column("patient_hash", sa.String(128), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checklist_snapshot"),
    )
    op.create_index("ix_checklist_snapshot_hook_instance", "checklist_snapshot", ["hook_instance"])
    op.create_index("ix_checklist_snapshot_expires_at", "checklist_snapshot", ["expires_at"])


def downgrade() -> None:
    op.drop_table("checklist_snapshot")
