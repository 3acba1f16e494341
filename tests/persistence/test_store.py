"""Store behaviour on SQLite and PostgreSQL: schema, feedback idempotency, audit, failures."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cds_service.persistence import InvalidFeedback, Store, StoreUnavailable
from cds_service.persistence.tables import feedback
from tests.persistence.helpers import audit, card_id, fb, reason

NOW = datetime(2025, 5, 1, 14, 5, tzinfo=UTC)


def feedback_rows(url: str) -> list[sa.Row[tuple[object, ...]]]:
    """Read the feedback table through a separate engine: what another process would see."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(feedback).order_by(feedback.c.id)))
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    store = Store(db_url)
    assert not store.ping()  # no tables yet: not ready
    store.upgrade()
    store.upgrade()  # every start-up runs it again
    assert store.ping()
    engine = sa.create_engine(store.url)
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    store.close()
    assert {"audit", "audit_card", "feedback", "alembic_version"} <= names
    assert version == Store.head_revision()


def test_feedback_is_stored_with_every_field(store: Store, db_url: str) -> None:
    card, sugg = card_id(), card_id()
    items = [
        fb(card, "accepted", "2025-05-01T14:03:22Z", acceptedSuggestions=[{"id": sugg}]),
        fb(
            card,
            "overridden",
            "2025-05-01T15:00:00+02:00",
            **reason("palliative", "Palliative care", "Hospice"),
        ),
    ]
    assert store.save_feedback("va-safety", items, NOW) == 2

    accepted, overridden = feedback_rows(db_url)
    assert (accepted.service, accepted.card, accepted.outcome) == ("va-safety", card, "accepted")
    assert accepted.accepted_suggestions == [sugg]
    assert accepted.outcome_at == datetime(2025, 5, 1, 14, 3, 22, tzinfo=UTC)
    assert accepted.received_at.astimezone(UTC).replace(tzinfo=None) == NOW.replace(tzinfo=None)
    assert overridden.reason_code == "palliative"
    assert overridden.reason_display == "Palliative care"
    assert overridden.reason_system == "https://cds.example.com/override-reasons"
    assert overridden.user_comment == "Hospice"
    assert overridden.outcome_timestamp == "2025-05-01T15:00:00+02:00"  # as sent, for the record
    assert overridden.outcome_at.astimezone(UTC) == datetime(2025, 5, 1, 13, 0, tzinfo=UTC)


def test_resent_feedback_is_acknowledged_but_not_stored_twice(store: Store, db_url: str) -> None:
    card = card_id()
    batch = [fb(card, **reason("palliative", "Palliative care"))]
    assert store.save_feedback("va-safety", batch, NOW) == 1
    # The EHR retries (e.g. our 200 got lost): not an error, nothing new.
    assert store.save_feedback("va-safety", batch, NOW + timedelta(minutes=1)) == 0
    # The same instant written with another offset, or the card id in upper case, is the same report.
    assert store.save_feedback("va-safety", [fb(card.upper(), ts="2025-05-01T16:03:22+02:00")], NOW) == 0
    # Duplicates inside one batch count once.
    other = card_id()
    assert store.save_feedback("va-safety", [fb(other), fb(other), fb(other)], NOW) == 1
    # A different outcome or a later report of the same card is new information.
    assert store.save_feedback("va-safety", [fb(card, "accepted", acceptedSuggestions=[])], NOW) == 1
    assert store.save_feedback("va-safety", [fb(card, ts="2025-05-01T14:09:00Z")], NOW) == 1
    assert len(feedback_rows(db_url)) == 4


def test_concurrent_retries_from_a_threadpool_store_each_item_once(store: Store, db_url: str) -> None:
    cards = [card_id() for _ in range(5)]
    batch = [fb(c) for c in cards]
    results: list[int] = []
    errors: list[BaseException] = []

    def post() -> None:
        try:
            results.append(store.save_feedback("va-safety", batch, NOW))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == 5  # every item new exactly once across all racing requests
    assert sorted(r.card for r in feedback_rows(db_url)) == sorted(cards)


def test_feedback_for_an_unknown_card_is_kept(store: Store, db_url: str) -> None:
    stranger = card_id()  # never audited (audit write failed, or another instance showed it)
    assert store.save_feedback("va-safety", [fb(stranger, **reason(comment="not my patient"))], NOW) == 1
    (row,) = feedback_rows(db_url)
    assert row.card == stranger
    assert row.user_comment == "not my patient"


def test_legacy_feedback_shapes_are_stored_normalised(store: Store, db_url: str) -> None:
    card, sugg = card_id(), card_id()
    items = [
        # sandbox#135: reason without the wrapper; docs#523: suggestions as bare strings
        fb(card, overrideReason={"system": "s", "code": "tolerant"}),
        fb(card, "accepted", acceptedSuggestions=[sugg.upper()]),
    ]
    assert store.save_feedback("va-safety", items, NOW) == 2
    first, second = feedback_rows(db_url)
    assert first.reason_code == "tolerant"
    assert second.accepted_suggestions == [sugg]


def test_impossible_timestamp_is_refused_and_nothing_is_written(store: Store, db_url: str) -> None:
    good, bad = fb(card_id()), fb(card_id(), ts="2025-13-45T10:00:00Z")  # passes the regex only
    with pytest.raises(InvalidFeedback):
        store.save_feedback("va-safety", [good, bad], NOW)
    assert feedback_rows(db_url) == []


def test_audit_record_round_trip(store: Store) -> None:
    c1, c2, s1 = card_id(), card_id(), card_id()
    record = audit([(c1, "opioid-mme"), (c2, "anticoag-hold")], at=NOW)
    record.cards[0]["suggestions"] = [s1]
    record.cards[1]["indicator"] = "critical"
    record.fhir_outcomes.update({"meds": "failed:timeout", "user": "null"})
    store.record_audit(record)

    store.record_audit(record)  # a retry of the same record neither fails nor duplicates it
    found = store.find_audit(record.hook_instance)
    assert found == record
    assert [s.shown for s in store.override_report(None)] == [1, 1]
    assert found is not None and found.received_at.tzinfo is not None
    assert store.find_audit(card_id()) is None


def test_reused_hook_instance_keeps_both_and_finds_the_newest(store: Store) -> None:
    hook_instance = card_id()
    first = audit([(card_id(), "opioid-mme")], at=NOW, hook_instance=hook_instance)
    second = audit([(card_id(), "anticoag-hold")], at=NOW + timedelta(seconds=5), hook_instance=hook_instance)
    store.record_audit(first)
    store.record_audit(second)  # a client reusing hookInstance must not lose the audit (docs#499)
    assert store.find_audit(hook_instance) == second
    report = {s.rule_id: s.shown for s in store.override_report(None)}
    assert report == {"opioid-mme": 1, "anticoag-hold": 1}


def test_unreachable_database_raises_store_unavailable(db_url: str, tmp_path: object) -> None:
    if db_url.startswith("sqlite"):
        bad = "sqlite:////nonexistent-dir/deeper/va-cds.db"
    else:
        bad = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens on port 1
    store = Store(bad)
    assert store.ping() is False
    with pytest.raises(StoreUnavailable):
        store.save_feedback("va-safety", [fb(card_id())], NOW)
    with pytest.raises(StoreUnavailable):
        store.record_audit(audit([(card_id(), "opioid-mme")]))
    with pytest.raises(StoreUnavailable):
        store.find_audit(card_id())
    with pytest.raises(StoreUnavailable):
        store.upgrade()
    store.close()


def test_bad_urls_are_configuration_errors() -> None:
    with pytest.raises(ValueError):
        Store("not a url")
    with pytest.raises(ValueError, match="unsupported"):
        Store("mysql://u@h/db")
    # The bare scheme is accepted and uses the psycopg 3 driver we ship.
    assert Store("postgresql://u@h/db").url.drivername == "postgresql+psycopg"
    assert Store("postgres://u@h/db").url.drivername == "postgresql+psycopg"
