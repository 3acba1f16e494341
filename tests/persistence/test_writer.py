"""The group-commit writer (cds_service.persistence.writer) on SQLite and PostgreSQL, with the app's real
kinds of write (audit records, checklist snapshots).

A `Gate` item holds the writer thread inside a transaction until the test opens it, so "items queued while
the writer is busy" is arranged deterministically, never by timing. Transactions are counted with a
SQLAlchemy `commit` event listener.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

from cds_service.checklist.service import SNAPSHOT_WRITES
from cds_service.checklist.storage import Snapshot, SnapshotStore
from cds_service.checklist.token import new_snapshot_id
from cds_service.metrics import Metrics
from cds_service.persistence import AuditRecord, Store
from cds_service.persistence.writer import GroupCommitWriter
from cds_service.state import AuditWrites
from tests.persistence.helpers import audit, card_id

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HANG_GUARD_S = 60  # only so a broken writer fails the test instead of hanging it; never reached when correct


class Gate:
    """A kind of write whose one item holds the writer thread (inside its transaction) until opened."""

    what = "gate"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def write(self, store: Store, conn: Connection, items: Sequence[None]) -> None:
        self.entered.set()
        if not self.opened.wait(HANG_GUARD_S):
            raise RuntimeError("gate never opened")

    def failed(self, item: None, exc: Exception) -> None:
        raise AssertionError(f"the gate item failed: {exc!r}")


@contextmanager
def held(writer: GroupCommitWriter) -> Iterator[Gate]:
    """The writer is busy for the duration: everything submitted meanwhile waits in its queue."""
    gate = Gate()
    writer.submit(gate, None)
    assert gate.entered.wait(HANG_GUARD_S)
    try:
        yield gate
    finally:
        gate.opened.set()


@contextmanager
def counting_commits(store: Store) -> Iterator[list[int]]:
    count = [0]

    def on_commit(_conn: Connection) -> None:
        count[0] += 1

    event.listen(store._engine, "commit", on_commit)
    try:
        yield count
    finally:
        event.remove(store._engine, "commit", on_commit)


@pytest.fixture
def writer(store: Store) -> Iterator[GroupCommitWriter]:
    w = GroupCommitWriter(store)
    yield w
    w.close()


def snapshot(**overrides: Any) -> Snapshot:
    values: dict[str, Any] = {
        "id": new_snapshot_id(),
        "hook_instance": str(uuid.uuid4()),
        "service": "va-preprocedure",
        "hook": "order-sign",
        "card_uuid": card_id(),
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "patient_hash": "hmac-sha256:3f2a",
        "items": [{"id": "pre.consent", "label": "Consent", "status": "unknown", "evidence": []}],
    }
    values.update(overrides)
    return Snapshot(**values)


def results(futures: Sequence[Future[bool]]) -> list[bool]:
    return [f.result(timeout=HANG_GUARD_S) for f in futures]


def stored_audit_instances(store: Store) -> list[str]:
    """hookInstance of every audit row, in the order the rows were inserted (id order)."""
    with store._engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT hook_instance FROM audit ORDER BY id")).scalars())


def count(store: Store, table: str) -> int:
    with store._engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_queued_audits_and_snapshots_are_all_stored_in_arrival_order(
    store: Store, writer: GroupCommitWriter
) -> None:
    kind = AuditWrites(Metrics())
    records = [audit([(card_id(), "opioid-mme"), (card_id(), "anticoag-hold")]) for _ in range(40)]
    records += [audit([]) for _ in range(5)]  # a hook call that showed no card is audited too
    snaps = [snapshot() for _ in range(20)]
    futures = []
    for i, record in enumerate(records):
        futures.append(writer.submit(kind, record))
        if i < len(snaps):
            futures.append(writer.submit(SNAPSHOT_WRITES, snaps[i]))
    assert all(results(futures))
    assert stored_audit_instances(store) == [r.hook_instance for r in records]
    for record in records[:3]:
        found = store.find_audit(record.hook_instance)
        assert found is not None and found.cards == record.cards
    assert count(store, "audit_card") == 80
    assert [SnapshotStore(store).load(s.id) for s in snaps] == snaps


def test_a_burst_is_written_in_fewer_transactions_than_items(store: Store, writer: GroupCommitWriter) -> None:
    kind = AuditWrites(Metrics())
    burst = 60
    with counting_commits(store) as commits:
        with held(writer):
            futures = [writer.submit(kind, audit([(card_id(), "opioid-mme")])) for _ in range(burst // 2)]
            futures += [writer.submit(SNAPSHOT_WRITES, snapshot()) for _ in range(burst // 2)]
        assert all(results(futures))
    # The gate's own transaction, then the whole burst (it was queued while the writer was busy) in one.
    assert commits[0] == 2 < burst
    assert count(store, "audit") == count(store, "checklist_snapshot") == burst // 2


def test_a_batch_never_exceeds_its_bound(store: Store) -> None:
    writer = GroupCommitWriter(store, max_batch=8)
    try:
        with counting_commits(store) as commits:
            with held(writer):
                futures = [writer.submit(SNAPSHOT_WRITES, snapshot()) for _ in range(20)]
            assert all(results(futures))
    finally:
        writer.close()
    assert commits[0] == 1 + 3  # the gate, then 8 + 8 + 4
    assert count(store, "checklist_snapshot") == 20


def test_one_bad_item_does_not_sink_the_rest_of_its_batch(
    store: Store, writer: GroupCommitWriter, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    kind = AuditWrites(metrics)
    first, last = audit([(card_id(), "opioid-mme")]), audit([(card_id(), "anticoag-hold")])
    refused = AuditRecord(  # the database refuses it: hook_instance is NOT NULL
        hook_instance=None,  # type: ignore[arg-type]
        service_id="va-safety",
        hook="order-sign",
        received_at=NOW,
        duration_ms=1.0,
        patient_hash=None,
        cards=[{"uuid": card_id(), "rule": "opioid-mme", "indicator": "warning", "suggestions": []}],
    )
    malformed = audit([(card_id(), "opioid-mme")])
    del malformed.cards[0]["rule"]  # a bug upstream: not a database problem
    good_snap = snapshot()
    bad_snap = snapshot(service=None)  # refused by the database: NOT NULL
    caplog.set_level(logging.INFO)
    with held(writer):
        futures = [
            writer.submit(kind, first),
            writer.submit(kind, refused),
            writer.submit(SNAPSHOT_WRITES, bad_snap),
            writer.submit(kind, malformed),
            writer.submit(SNAPSHOT_WRITES, good_snap),
            writer.submit(kind, last),
        ]
    assert results(futures) == [True, False, False, False, True, True]
    # Stored once each (the failed batch left nothing behind), still in arrival order.
    assert stored_audit_instances(store) == [first.hook_instance, last.hook_instance]
    assert SnapshotStore(store).load(good_snap.id) == good_snap
    assert SnapshotStore(store).load(bad_snap.id) is None
    # Reported as before the writer existed: database refusals counted and the record logged instead ...
    assert metrics.registry.get_sample_value("va_cds_audit_write_failures_total") == 1
    message = "audit store unavailable; audit record logged instead"
    logged = [r for r in caplog.records if r.getMessage() == message]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert logged[0].audit["cards"] == refused.cards  # type: ignore[attr-defined]
    snap_logged = [r for r in caplog.records if r.getMessage().startswith("checklist snapshot not stored")]
    assert [r.hook_instance for r in snap_logged] == [bad_snap.hook_instance]  # type: ignore[attr-defined]
    # ... and a bug logged with its traceback.
    bug = [r for r in caplog.records if r.getMessage() == "audit write failed"]
    assert len(bug) == 1 and bug[0].levelno == logging.ERROR and bug[0].exc_info is not None
    assert bug[0].audit_hook_instance == malformed.hook_instance  # type: ignore[attr-defined]


def test_a_record_written_again_is_not_stored_twice(store: Store, writer: GroupCommitWriter) -> None:
    kind = AuditWrites(Metrics())
    record = audit([(card_id(), "opioid-mme"), (card_id(), "anticoag-hold")])
    assert results([writer.submit(kind, record)]) == [True]
    with held(writer):  # a retry after an unclear outcome, twice in one batch as well
        futures = [writer.submit(kind, record), writer.submit(kind, record)]
    assert results(futures) == [True, True]
    assert stored_audit_instances(store) == [record.hook_instance]
    assert count(store, "audit_card") == 2


def test_close_writes_everything_still_queued(store: Store) -> None:
    writer = GroupCommitWriter(store)
    kind = AuditWrites(Metrics())
    records = [audit([(card_id(), "opioid-mme")]) for _ in range(600)]  # more than two batches
    with held(writer) as gate:
        futures = [writer.submit(kind, r) for r in records]
        closer = threading.Thread(target=writer.close)
        closer.start()
        # Until close() has taken effect, a submission is still accepted (and must be stored too).
        while True:
            extra = audit([(card_id(), "opioid-mme")])
            try:
                futures.append(writer.submit(kind, extra))
            except RuntimeError:
                break
            records.append(extra)
            closer.join(0.001)
        gate.opened.set()
        closer.join(HANG_GUARD_S)
        assert not closer.is_alive()
    assert all(f.done() for f in futures)  # close() returned only after everything was written
    assert all(results(futures))
    assert stored_audit_instances(store) == [r.hook_instance for r in records]


def test_a_dead_connection_is_replaced_and_its_batch_retried(
    store: Store, writer: GroupCommitWriter, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    kind = AuditWrites(metrics)
    assert results([writer.submit(kind, audit([(card_id(), "opioid-mme")]))]) == [True]
    conn = writer._conn  # kept by the writer between batches
    assert conn is not None
    conn.connection.dbapi_connection.close()  # type: ignore[union-attr]  # as if the server had gone away
    caplog.set_level(logging.WARNING)
    records = [audit([(card_id(), "opioid-mme")]) for _ in range(5)]
    futures = [writer.submit(kind, r) for r in records]
    assert all(results(futures))
    assert stored_audit_instances(store)[1:] == [r.hook_instance for r in records]
    assert any("connection was lost" in r.getMessage() for r in caplog.records)
    assert metrics.registry.get_sample_value("va_cds_audit_write_failures_total") == 0
