"""Fixtures for the page tests: the real app (all clinical services) with a movable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.pages.helpers import SERVICE_URL, Clock, checklist_link, order_sign_request


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off",
        database_url=f"sqlite:///{tmp_path}/va-cds.db",
        patient_hash_key="test-secret-for-pages",
        checklist_ttl_s=3600,
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


@pytest.fixture
def hook_response(client: TestClient) -> dict[str, Any]:
    body = order_sign_request(client.get("/cds-services").json())
    resp = client.post(SERVICE_URL, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture
def checklist_path(hook_response: dict[str, Any]) -> str:
    url = checklist_link(hook_response["cards"])
    assert url.startswith("http://testserver/checklist/")
    return url.removeprefix("http://testserver")
