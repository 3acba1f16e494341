"""Migration 0003 on SQLite and PostgreSQL: existing audit and feedback rows survive and stay bound (their
issuer and tenant become ''), the new idempotency key lets another caller's report coexist, and the
downgrade goes back to 0002, keeping the oldest of reports that differ only by caller."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from cds_service.persistence import AuditRecord, Store
from cds_service.persistence.tables import UTCDateTime, audit_card, feedback
from tests.persistence.helpers import card_id, fb, reason

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _migrate(store: Store, target: str, down: bool = False) -> None:
    cfg = store._alembic_config()
    with store._transaction("test migration") as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)


def _revision(store: Store) -> str:
    with store._transaction("read revision") as conn:
        return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())


def test_upgrade_keeps_rows_bound_and_downgrade_returns_to_0002(db_url: str) -> None:
    store = Store(db_url)
    try:
        _migrate(store, "0002")
        card, hook_instance = card_id(), card_id()
        when = NOW
        stamp = UTCDateTime()  # how the Store writes timestamps, so the seeded rows compare like its own
        # Rows as 0002 knew them (no issuer, tenant or fingerprint yet), written with plain SQL.
        with store._transaction("seed") as conn:
            audit_id = conn.execute(
                sa.text(
                    "INSERT INTO audit (hook_instance, service, hook, received_at, duration_ms, "
                    "patient_hash, fhir_outcomes) "
                    "VALUES (:h, 'va-preprocedure', 'order-sign', :t, 3.5, 'abc', '{}') RETURNING id"
                ).bindparams(sa.bindparam("t", type_=stamp)),
                {"h": hook_instance, "t": when},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO audit_card (uuid, audit_id, position, rule_id, indicator, suggestions) "
                    "VALUES (:u, :a, 0, 'pre.coag.labs-missing', 'warning', '[]')"
                ),
                {"u": card, "a": audit_id},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO feedback (service, card, outcome, reason_code, outcome_timestamp, "
                    "outcome_at, received_at) VALUES ('va-preprocedure', :c, 'overridden', 'not-applicable', "
                    "'2025-05-01T14:03:22Z', :o, :t)"
                ).bindparams(sa.bindparam("t", type_=stamp), sa.bindparam("o", type_=stamp)),
                {
                    "c": card,
                    "t": when,
                    "o": when.replace(year=2025, month=5, day=1, hour=14, minute=3, second=22),
                },
            )

        _migrate(store, "head")
        assert _revision(store) == Store.head_revision()
        found = store.find_audit(hook_instance)
        assert found is not None and (found.issuer, found.tenant) == ("", "")
        report = {s.rule_id: s for s in store.override_report(None)}
        assert report["pre.coag.labs-missing"].overridden == 1  # still bound to its card
        with store._transaction("read") as conn:
            assert conn.execute(sa.select(audit_card.c.fingerprint)).scalar_one() is None
        # The new key: the same report from another issuer is a new row, not a duplicate; a resend is.
        item = fb(card, "overridden", "2025-05-01T14:03:22Z", **reason("not-applicable"))
        assert store.save_feedback("va-preprocedure", [item], NOW, issuer="https://other.example") == 1
        assert store.save_feedback("va-preprocedure", [item], NOW) == 0
        store.record_audit(
            AuditRecord(
                hook_instance=card_id(),
                service_id="va-preprocedure",
                hook="patient-view",
                received_at=NOW,
                duration_ms=1.0,
                patient_hash="abc",
                cards=[
                    {
                        "uuid": card_id(),
                        "rule": "r",
                        "indicator": "info",
                        "suggestions": [],
                        "fingerprint": "v1.x",
                    }
                ],
                issuer="https://ehr.example",
                tenant="t1",
            )
        )

        _migrate(store, "0002", down=True)
        assert _revision(store) == "0002"
        with store._transaction("read") as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one() == 1
            columns = {c["name"] for c in sa.inspect(conn).get_columns("audit")}
            assert "issuer" not in columns and "tenant" not in columns
        _migrate(store, "head")  # and up again
        assert _revision(store) == Store.head_revision()
    finally:
        store.close()
