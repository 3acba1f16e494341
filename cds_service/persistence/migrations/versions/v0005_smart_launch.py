"""SMART launch sessions and the checklist filing audit line (issue 20).

Revision ID: 0005
Revises: 0004 (chained 0002 → 0003 → 0004 → 0005 on the issue-17 branch, as the integrator planned)
Create Date: 2026-12-01

Written out by hand (not from `cds_service.smart.sessions`) so this revision keeps describing the tables
as they were created even if the definitions move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Timestamp = sa.DateTime(timezone=True)
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "smart_launch_session",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("iss", sa.String(500), nullable=False),
        sa.Column("token_endpoint", sa.String(500), nullable=False),
        sa.Column("created_at", _Timestamp, nullable=False),
        sa.Column("expires_at", _Timestamp, nullable=False),
        sa.Column("snapshot_id", sa.String(32), nullable=True),
        sa.Column("hook_instance", sa.String(64), nullable=True),
        sa.Column("patient_hash", sa.String(128), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_smart_launch_session"),
    )
    op.create_index("ix_smart_launch_session_expires_at", "smart_launch_session", ["expires_at"])
    op.create_table(
        "checklist_filing",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("hook_instance", sa.String(64), nullable=False),
        sa.Column("patient_hash", sa.String(128), nullable=True),
        sa.Column("fhir_server", sa.String(500), nullable=False),
        sa.Column("resource", sa.String(500), nullable=False),
        sa.Column("filed_at", _Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checklist_filing"),
    )
    op.create_index("ix_checklist_filing_hook_instance", "checklist_filing", ["hook_instance"])


def downgrade() -> None:
    op.drop_table("checklist_filing")
    op.drop_table("smart_launch_session")
