"""The alert-memory lookup's query plan: each audit row's cards are fetched by `audit_id`, never by scanning
every card of the rule (migration 0006).

Found in the `workers` benchmark on PostgreSQL: on a database autovacuum had not analysed yet, the planner
probed `audit_card` through an index on `rule_id` once per audit row of the patient — every card of that
rule, of every patient, per row — so the lookup grew quadratically and saturated PostgreSQL at 100 calls/s.
psycopg prepares a statement after a few executions and PostgreSQL then settles on a generic plan, so the
plan is checked here as PostgreSQL plans it with `plan_cache_mode = force_generic_plan` (and as planned for
these values): no timing, only which index reaches `audit_card`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from cds_service.persistence import AuditRecord, Store
from tests.persistence.helpers import card_id

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PATIENT = "hmac-sha256:plan"
RULE = "pre.checklist"


def _record(i: int, patient: str, rule: str) -> AuditRecord:
    return AuditRecord(
        hook_instance=card_id(),
        service_id="va-pre",
        hook="order-sign",
        received_at=NOW - timedelta(minutes=i),
        duration_ms=5.0,
        patient_hash=patient,
        cards=[
            {
                "uuid": card_id(),
                "rule": rule,
                "indicator": "warning",
                "suggestions": [],
                "fingerprint": f"v1.{i % 3}",
            }
        ],
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upgrade()
    # One chart with a history, and other patients' cards of the same rule (what a rule-keyed scan reads).
    with s._transaction("seed") as conn:
        s.write_audits(conn, [_record(i, PATIENT, RULE) for i in range(40)])
        s.write_audits(conn, [_record(i, f"other-{i}", RULE) for i in range(40)])
    yield s
    s.close()


def _plan(store: Store, *, generic: bool, prepared: bool = False) -> str:
    """The recall statement's plan on the reader engine, as text (EXPLAIN instead of running it).

    `prepared`: the SQL the service really runs (compiled once, one parameter per list value), else the
    statement with expanding lists as SQLAlchemy renders it.
    """
    engine = store._reader()
    postgres = engine.dialect.name == "postgresql"

    def explain(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> Any:
        return ("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + statement, params

    params = {
        "patient": PATIENT,
        "issuer": "",
        "tenant": "",
        "since": NOW - timedelta(days=30),
        "repeat_since": NOW - timedelta(hours=24),
        "rules": [RULE],
        "fingerprints": ["v1.0"],
        "max_calls": 200,
    }
    with engine.connect() as conn:
        if postgres:
            mode = "force_generic_plan" if generic else "force_custom_plan"
            conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
        event.listen(conn, "before_cursor_execute", explain, retval=True)
        try:
            if prepared:
                rows = store._recall_prepared.driver_rows(conn, params)
            else:
                rows = [tuple(r) for r in conn.execute(store._recall, params).all()]
        finally:
            event.remove(conn, "before_cursor_execute", explain)
            conn.rollback()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("prepared", [True, False], ids=["as-run", "expanding"])
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_recall_fetches_cards_by_audit_row_not_by_rule(store: Store, generic: bool, prepared: bool) -> None:
    if generic and store.url.get_backend_name() != "postgresql":
        pytest.skip("generic plans are PostgreSQL's")
    plan = _plan(store, generic=generic, prepared=prepared)
    assert "ix_audit_card_rule_id" not in plan, plan
    # Not a scan of the whole card table either (per audit row that is the same quadratic cost).
    assert "Seq Scan on audit_card" not in plan and "SCAN audit_card" not in plan, plan
    assert "ix_audit_card_audit_rule" in plan, plan


def test_audit_card_indexes_match_the_tables_module(store: Store) -> None:
    """Migration 0006 and `tables.audit_card` describe the same indexes (autogenerate stays empty)."""
    from cds_service.persistence.tables import audit_card

    with store._engine.connect() as conn:
        found = {ix["name"] for ix in sa.inspect(conn).get_indexes("audit_card")}
    assert found == {ix.name for ix in audit_card.indexes}
