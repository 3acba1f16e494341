"""Alert memory's card lookup keyed on (audit_id, rule_id), replacing the single-column indexes on
audit_id and on rule_id.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Why: the memory lookup (`Store.recall`) walks one patient's audit rows by `ix_audit_memory`, then fetches
each row's cards of the rules asked about. With single-column indexes on `audit_card.audit_id` and
`audit_card.rule_id`, PostgreSQL's choice between them rests on statistics. On a database autovacuum has
not analysed yet (a new deployment; the benchmark's fresh server, whose `audit_card` grows from empty
faster than autovacuum's one-minute nap), and in the generic plan PostgreSQL settles on once psycopg
prepares the statement, it probed `ix_audit_card_rule_id` per audit row: every card of that rule, of every
patient, for each row of the chart — quadratic. Measured in the `workers` benchmark: the lookup at 110-270
ms instead of 3 ms, PostgreSQL's CPU saturated and 100 calls/s with 2 workers dropping requests.

The composite index answers the whole per-row probe (audit_id = ? AND rule_id IN (...)), and with the
rule_id index gone nothing else can tempt the planner (tests/memory/test_recall_plan.py checks the plan,
custom and generic). It also serves what the audit_id index did (its leading column: the foreign key's ON
DELETE CASCADE). Nothing filters cards by rule_id alone: the override report groups by it over whole
tables, which needs no index. One index to maintain per card insert instead of two.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_card_audit_rule", "audit_card", ["audit_id", "rule_id"])
    op.drop_index("ix_audit_card_audit_id", table_name="audit_card")
    op.drop_index("ix_audit_card_rule_id", table_name="audit_card")


def downgrade() -> None:
    op.create_index("ix_audit_card_audit_id", "audit_card", ["audit_id"])
    op.create_index("ix_audit_card_rule_id", "audit_card", ["rule_id"])
    op.drop_index("ix_audit_card_audit_rule", table_name="audit_card")
