"""One app instance through two ASGI lifespans (what Starlette's TestClient does on a second `with`, and
what schemathesis' ASGI transport does once per operation): hook calls must keep working.

Regression test: the writer thread used to be created once and shut down by the first lifespan, so every
later hook call answered 500 (`cannot schedule new futures after shutdown`). The app now recreates it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings
from hooks.preprocedure.prefetch import PREFETCH
from tests.hardening.test_fhir_faults import CONTEXT


def _body() -> dict[str, object]:
    return {
        "hook": "order-sign",
        "hookInstance": "0b8f4a6e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "context": CONTEXT,
        "prefetch": dict.fromkeys(PREFETCH),  # null = "no data": nothing to fetch, rules run
    }


def test_hook_calls_survive_a_second_lifespan(tmp_path: Path) -> None:
    settings = Settings(auth_mode="off", database_url=f"sqlite:///{tmp_path}/l.db", log_level="WARNING")  # type: ignore[call-arg]
    app = create_app(settings)
    with TestClient(app) as first:
        assert first.post("/cds-services/va-preprocedure-order-sign", json=_body()).status_code == 200
    with TestClient(app, raise_server_exceptions=False) as second:
        resp = second.post("/cds-services/va-preprocedure-order-sign", json=_body())
        assert resp.status_code == 200, resp.text
