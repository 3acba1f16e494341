"""Fixtures for the SMART checklist tests: the test EHR (authlib authorization server + FHIR endpoint) and
va-cds under uvicorn, both on loopback ports chosen at run time, talking real HTTP to each other."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.pages.helpers import Clock
from tests.smart.ehr import CLIENT_ID, Client, Ehr, running_ehr

SECRET = "smart-test-secret"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCOPES = "launch openid fhirUser patient/Patient.r patient/QuestionnaireResponse.c"


class App:
    """va-cds as the EHR sees it: its base URL, its clock and its database."""

    def __init__(self, base: str, clock: Clock, database_url: str, app: object) -> None:
        self.base = base
        self.clock = clock
        self.database_url = database_url
        self.app = app

    @property
    def launch_url(self) -> str:
        return f"{self.base}/smart/launch"


def _trust_file(directory: Path, fhir_base: str) -> Path:
    """A trust file whose one issuer lists the test EHR's FHIR base under fhir_servers."""
    jwks = json.loads((FIXTURES / "sandbox-jwks.json").read_text(encoding="utf-8"))
    doc = {"issuers": [{"iss": "https://ehr.test", "jwks": jwks, "fhir_servers": [fhir_base]}]}
    path = directory / "trust.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ehr() -> Iterator[Ehr]:
    with running_ehr() as e:
        yield e


@pytest.fixture(scope="module")
def app(ehr: Ehr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    import uvicorn

    from tests.net import free_port

    tmp = tmp_path_factory.mktemp("smart")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clock = Clock()
    database_url = f"sqlite:///{tmp}/va-cds.db"
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off",  # the hook calls; SMART trust comes from the trust file's fhir_servers
        trust_file=_trust_file(tmp, ehr.fhir_base),
        database_url=database_url,
        patient_hash_key=SECRET,
        checklist_ttl_s=3600,
        smart_client_id=CLIENT_ID,
        public_base_url=base,
    )
    built = create_app(settings, clock=clock)
    ehr.clients[CLIENT_ID] = Client(CLIENT_ID, [f"{base}/smart/callback"], SCOPES)
    server = uvicorn.Server(uvicorn.Config(built, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-smart-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield App(base, clock, database_url, built)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _fresh(app: App, ehr: Ehr) -> Iterator[None]:
    from tests.pages.helpers import NOW

    app.clock.now = NOW
    ehr.fail_next_write = None
    yield
    app.clock.now = NOW
