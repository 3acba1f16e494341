"""Alert memory (issue 19) and feedback bound to its card (issue 16 item 4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

* `audit` gains the caller's JWT issuer and tenant (empty text when authentication is off or the token
  names no tenant), and the index the memory lookup reads: (patient_hash, issuer, tenant, received_at).
* `audit_card` gains the card's evidence fingerprint, what memory did to it (`demoted`, ...; NULL when
  nothing) and stable keys of its suggestions (to recognise an accepted order on a later call).
* `feedback` gains issuer and tenant, and its idempotency key includes them: a report from another issuer
  can never make the genuine one a "duplicate".

Written out by hand (not from `tables.py`) so it keeps describing this step after the tables move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = ["service", "card", "outcome", "outcome_at"]
_NEW_KEY = ["service", "issuer", "tenant", "card", "outcome", "outcome_at"]


def _caller_columns() -> list[sa.Column[str]]:
    # NOT NULL with '' rather than NULL: a unique constraint treats NULLs as distinct, and '' is what
    # "no issuer" (authentication off) and "no tenant" mean everywhere in the code.
    return [
        sa.Column("issuer", sa.String(500), nullable=False, server_default=""),
        sa.Column("tenant", sa.String(200), nullable=False, server_default=""),
    ]


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        for column in _caller_columns():
            batch.add_column(column)
    op.create_index("ix_audit_memory", "audit", ["patient_hash", "issuer", "tenant", "received_at"])

    with op.batch_alter_table("audit_card") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("memory", sa.String(60), nullable=True))
        batch.add_column(sa.Column("suggestion_keys", sa.JSON(), nullable=True))

    with op.batch_alter_table("feedback") as batch:
        for column in _caller_columns():
            batch.add_column(column)
        batch.drop_constraint("uq_feedback_idempotency", type_="unique")
        batch.create_unique_constraint("uq_feedback_idempotency", _NEW_KEY)


def downgrade() -> None:
    # Reports that differed only by issuer or tenant collapse to one again: the oldest of each is kept.
    op.execute(
        "DELETE FROM feedback WHERE id NOT IN "
        "(SELECT MIN(id) FROM feedback GROUP BY service, card, outcome, outcome_at)"
    )
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint("uq_feedback_idempotency", type_="unique")
        batch.create_unique_constraint("uq_feedback_idempotency", _OLD_KEY)
        batch.drop_column("tenant")
        batch.drop_column("issuer")
    with op.batch_alter_table("audit_card") as batch:
        batch.drop_column("suggestion_keys")
        batch.drop_column("memory")
        batch.drop_column("fingerprint")
    op.drop_index("ix_audit_memory", table_name="audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("tenant")
        batch.drop_column("issuer")
