"""A database that is down or slow costs the memory, never a card: the hook answers 200 with the cards
exactly as the rules built them, and /metrics says why memory was skipped."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from cds_service.persistence.store import Store
from tests.memory.conftest import (
    ANTICOAG,
    INR_HIGH,
    SERVICE_ID,
    Chart,
    Clock,
    MemoryClient,
    by_rule,
    hook_body,
    inr,
    make_app_client,
)
from tests.persistence.conftest import launch_or_skip
from tests.pg_server import PostgresServer


@pytest.mark.postgres
def test_a_database_outage_gives_full_cards_not_missing_ones(tmp_path: Path) -> None:
    server = launch_or_skip(tmp_path / "pg", fsync=False)
    try:
        clock = Clock()
        with make_app_client(server.create_database("outage"), clock, tmp_path) as client:
            mem = MemoryClient(client, clock)
            chart = Chart(labs=(inr(3.9),))
            first = by_rule(mem.call(chart))
            mem.feedback(first[ANTICOAG])
            assert by_rule(mem.call(chart))[ANTICOAG]["indicator"] == "info"  # memory works...

            server.kill()  # ...then the database goes away
            r = client.post(f"/cds-services/{SERVICE_ID}", json=hook_body(chart))
            assert r.status_code == 200
            cards = by_rule(r.json()["cards"])
            assert set(cards) == {ANTICOAG, INR_HIGH}
            assert cards[ANTICOAG]["indicator"] == "warning"  # in full: no memory, no missing card
            assert "org.va-cds.memory" not in cards[ANTICOAG]["extension"]
            assert 'va_cds_memory_lookup_failures_total{reason="unavailable"}' in client.get("/metrics").text
    finally:
        server.stop()


@pytest.mark.postgres
def test_a_slow_database_gives_full_cards_within_the_memory_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_server: PostgresServer
) -> None:
    # PostgreSQL: its lookups run in a worker thread under a time budget (SQLite's run inline, fail fast).
    clock = Clock()
    db = pg_server.create_database(f"slow_{uuid.uuid4().hex[:12]}")
    with make_app_client(db, clock, tmp_path) as client:
        mem = MemoryClient(client, clock)
        first = by_rule(mem.call(Chart()))[ANTICOAG]
        mem.feedback(first)
        real_recall = Store.recall

        def stalled(self: Store, *args: object, **kwargs: object) -> object:
            time.sleep(2)  # a database that answers, but far too late
            return real_recall(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Store, "recall", stalled)
        again = by_rule(mem.call(Chart()))[ANTICOAG]
        assert again["indicator"] == "warning" and "org.va-cds.memory" not in again["extension"]
        assert 'va_cds_memory_lookup_failures_total{reason="timeout"} 1.0' in client.get("/metrics").text
        monkeypatch.undo()
        assert by_rule(mem.call(Chart()))[ANTICOAG]["indicator"] == "info"  # back once it answers
