"""Audit rows and checklist snapshots through the real app (TestClient, all clinical services), on SQLite
and PostgreSQL: what a user of the audit trail and of the checklist links notices about the writer.

The writer is held busy by a `Gate` item where a test needs writes to be still queued; nothing waits on
time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.checklist import service as checklist_service
from cds_service.checklist import token as tokens
from cds_service.persistence import Store
from cds_service.settings import Settings
from tests.pages.helpers import SERVICE_URL, Clock, checklist_link, order_sign_request
from tests.persistence.test_writer import HANG_GUARD_S, Gate

BASE = "http://testserver"


@pytest.fixture
def app(db_url: str) -> FastAPI:
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off", database_url=db_url, patient_hash_key="test-writer", log_level="WARNING"
    )
    return create_app(settings, clock=Clock())


@pytest.fixture
def database(db_url: str) -> Iterator[Store]:
    """The database as another process would read it (its own engine)."""
    s = Store(db_url)
    yield s
    s.close()


def hook_call(client: TestClient, instance: str) -> dict[str, Any]:
    body = order_sign_request(client.get("/cds-services").json())
    body["hookInstance"] = instance
    resp = client.post(SERVICE_URL, json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def snapshot_instances(store: Store) -> list[str]:
    with store._engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT hook_instance FROM checklist_snapshot")).scalars())


def audit_instances(store: Store) -> list[str]:
    with store._engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT hook_instance FROM audit ORDER BY id")).scalars())


def hold_writer(app: FastAPI) -> Gate:
    gate = Gate()
    app.state.va.writer.submit(gate, None)
    assert gate.entered.wait(HANG_GUARD_S)
    return gate


def test_every_answered_hook_call_leaves_its_audit_row_and_snapshot_in_order(
    app: FastAPI, database: Store
) -> None:
    instances = [str(uuid.uuid4()) for _ in range(15)]
    with TestClient(app) as client:
        for instance in instances:
            hook_call(client, instance)
    assert audit_instances(database) == instances
    assert sorted(snapshot_instances(database)) == sorted(instances)


def test_shutdown_with_writes_still_queued_stores_them_all(app: FastAPI, database: Store) -> None:
    state = app.state.va
    instances = [str(uuid.uuid4()) for _ in range(8)]
    with TestClient(app) as client:
        gate = hold_writer(app)
        for instance in instances:
            hook_call(client, instance)  # answered; its audit row and snapshot queue behind the gate
        close_writer = state.close_writer

        def open_then_close() -> None:  # the lifespan's shutdown meets a full queue
            gate.opened.set()
            close_writer()

        state.close_writer = open_then_close
    assert audit_instances(database) == instances
    assert sorted(snapshot_instances(database)) == sorted(instances)
    # The app object lives on: its next lifespan starts a new writer.
    later = str(uuid.uuid4())
    with TestClient(app) as client:
        hook_call(client, later)
    assert audit_instances(database) == [*instances, later]


def test_checklist_page_opened_while_its_snapshot_is_queued_finds_it(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(app) as client:
        gate = hold_writer(app)
        link = checklist_link(hook_call(client, str(uuid.uuid4()))["cards"])
        key = checklist_service.signing_key(app.state.va)
        snapshot_id = tokens.verify(key, link.rsplit("/", 1)[1], Clock()()).snapshot_id
        original = checklist_service.wait_pending
        waited: list[str] = []

        async def wait_pending(sid: str) -> None:  # the page asks while the write is still queued
            assert sid == snapshot_id
            assert not checklist_service._pending[sid].done()  # really not written yet
            waited.append(sid)
            gate.opened.set()
            await original(sid)

        monkeypatch.setattr(checklist_service, "wait_pending", wait_pending)
        page = client.get(link.removeprefix(BASE))
    assert waited == [snapshot_id]
    assert page.status_code == 200
    assert "checklist" in page.text.lower()


def test_a_page_that_gives_up_waiting_does_not_cancel_the_write(
    app: FastAPI, database: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checklist_service, "PENDING_WAIT_S", 0.01)
    instance = str(uuid.uuid4())
    with TestClient(app) as client:
        gate = hold_writer(app)
        link = checklist_link(hook_call(client, instance)["cards"])
        key = checklist_service.signing_key(app.state.va)
        snapshot_id = tokens.verify(key, link.rsplit("/", 1)[1], Clock()()).snapshot_id
        future = checklist_service._pending[snapshot_id]
        # The writer is held, so the wait times out (asyncio.wait_for then cancels what it waited on).
        asyncio.run(checklist_service.wait_pending(snapshot_id))
        assert not future.done()
        gate.opened.set()
        assert future.result(timeout=HANG_GUARD_S) is True
    assert snapshot_instances(database) == [instance]
