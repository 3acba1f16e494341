"""Any replica can finish a launch another began: two app instances sharing one database (SQLite file, and
a real PostgreSQL server) take turns serving the hook call, launch, callback, page and filing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.pages.helpers import SERVICE_URL, Clock, checklist_card, order_sign_request
from tests.persistence.conftest import launch_or_skip
from tests.pg_server import PostgresServer
from tests.smart.conftest import SCOPES, SECRET, App, _trust_file
from tests.smart.ehr import CLIENT_ID, Client, Ehr
from tests.smart.flow import authorize, csrf


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = launch_or_skip(tmp_path_factory.mktemp("pg-smart"), fsync=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"smart_{uuid.uuid4().hex[:12]}")


def _replica(database_url: str, trust: Path, public_base: str, clock: Clock, **extra: Any) -> Any:
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off",
        trust_file=trust,
        database_url=database_url,
        patient_hash_key=SECRET,  # shared by the replicas, as the README requires
        public_base_url=public_base,
        **{"smart_client_id": CLIENT_ID, **extra},
    )
    return create_app(settings, clock=clock)


def test_a_launch_begun_on_one_replica_finishes_on_another(
    app: App, ehr: Ehr, database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    trust = _trust_file(tmp_path, ehr.fhir_base)
    # Both answer as the public base the EHR registered (the load balancer's address).
    with (
        TestClient(_replica(database_url, trust, app.base, clock)) as a,
        TestClient(_replica(database_url, trust, app.base, clock)) as b,
    ):
        body = order_sign_request(a.get("/cds-services").json())
        body["hookInstance"] = str(uuid.uuid4())
        hook = a.post(SERVICE_URL, json=body)
        assert hook.status_code == 200
        link = next(x for x in checklist_card(hook.json()["cards"])["links"] if x["type"] == "smart")
        launch_id = ehr.new_launch("p1", link["appContext"])

        started = a.get(
            "/smart/launch?" + urlencode({"iss": ehr.fhir_base, "launch": launch_id}), follow_redirects=False
        )
        assert started.status_code == 302
        cookie = started.cookies["va_cds_smart"]
        with httpx.Client(timeout=10, follow_redirects=False) as browser:
            back = authorize(browser, started)
        callback = back.headers["location"].removeprefix(app.base)
        b.cookies.set("va_cds_smart", cookie)  # the same browser, routed to the other replica
        finished = b.get(callback, follow_redirects=False)
        assert finished.status_code == 303, finished.text
        page = a.get("/smart/checklist")
        assert page.status_code == 200 and "Marta Testwoman" in page.text
        filed = b.post(
            "/smart/file",
            content=urlencode([("csrf", csrf(page.text)), ("tick", "consent.leakage")]),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert filed.status_code == 200, filed.text
        assert "Checklist filed in the chart" in filed.text
        # Ended for both: the session row (and the sealed token in it) is gone.
        assert a.get("/smart/checklist").status_code == 403


def test_confidential_client_authenticates_with_its_secret(app: App, ehr: Ehr, tmp_path: Path) -> None:
    """With VA_CDS_SMART_CLIENT_SECRET the token request carries HTTP Basic client authentication; the
    authorization server (configured to require it for this client) issues the token."""
    ehr.clients["va-cds-confidential"] = Client(
        "va-cds-confidential", [f"{app.base}/smart/callback"], SCOPES, client_secret="s3cret-for-tests"
    )
    clock = Clock()
    trust = _trust_file(tmp_path, ehr.fhir_base)
    url = f"sqlite:///{tmp_path / 'confidential.db'}"
    for secret, expected in (("wrong-secret", 502), ("s3cret-for-tests", 303)):
        extra = {"smart_client_id": "va-cds-confidential", "smart_client_secret": secret}
        with TestClient(_replica(url, trust, app.base, clock, **extra)) as c:
            body = order_sign_request(c.get("/cds-services").json())
            body["hookInstance"] = str(uuid.uuid4())
            cards = c.post(SERVICE_URL, json=body).json()["cards"]
            link = next(x for x in checklist_card(cards)["links"] if x["type"] == "smart")
            query = urlencode({"iss": ehr.fhir_base, "launch": ehr.new_launch("p1", link["appContext"])})
            started = c.get(f"/smart/launch?{query}", follow_redirects=False)
            with httpx.Client(timeout=10, follow_redirects=False) as browser:
                back = authorize(browser, started)
            answer = c.get(back.headers["location"].removeprefix(app.base), follow_redirects=False)
            assert answer.status_code == expected, answer.text
