"""The shared `jti` replay table (issue 17): one row per accepted bearer token until it expires.

Revision ID: 0004
Revises: 0003 (chained 0002 → 0003 → 0004 → 0005 once issue 19's 0003 landed on main)
Create Date: 2026-12-01

Written out by hand (not from `cds_service.persistence.jti`) so this revision keeps describing the table as
it was created. The primary key is what makes the replay check atomic across workers and replicas: the
second insert of the same key conflicts, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jti",
        # SHA-256 (hex) of issuer and jti: bounded length whatever the issuer URL, one index entry.
        sa.Column("key", sa.String(64), nullable=False),
        # Unix seconds after which the token could not be accepted anyway (exp + leeway).
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_jti"),
    )
    op.create_index("ix_jti_expires_at", "jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("jti")
