"""Every request the real CDS Hooks Sandbox sent (fixtures/sandbox-requests) replays with a 2xx and no error.

The sandbox called stub services; here each call goes to the va-cds service that answers its hook. Its FHIR
server (127.0.0.1:8091) is stood in for by respx answering empty searchsets, as the sandbox's server did for a
patient with no relevant data.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.core.conftest import NOW, make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sandbox-requests"
SERVICE_FOR_HOOK = {
    "order-select": ["va-preprocedure-order-select"],
    "order-sign": ["va-preprocedure-order-sign"],
    "patient-view": ["va-preprocedure-patient-view", "va-postprocedure-patient-view"],
}


def captured() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "request" in doc:
            out.append((path.stem, doc["request"]))
        elif isinstance(doc, dict):
            out.extend(
                (f"{path.stem}:{k}", v["request"])
                for k, v in doc.items()
                if isinstance(v, dict) and "request" in v
            )
    return out


def _empty_fhir(request: httpx.Request) -> httpx.Response:
    if re.match(r"^/Patient/[^/]+$", request.url.path):
        return httpx.Response(
            200, json={"resourceType": "Patient", "id": request.url.path.rsplit("/", 1)[-1]}
        )
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []})


@pytest.mark.parametrize(("name", "request_doc"), captured(), ids=[n for n, _ in captured()])
def test_captured_sandbox_request_replays_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, request_doc: dict
) -> None:
    app = create_app(make_settings(tmp_path, cors_origins=["http://127.0.0.1:8080"]), clock=lambda: NOW)
    headers = {
        k: v for k, v in request_doc["headers"].items() if k.lower() in ("content-type", "origin", "accept")
    }
    body = request_doc.get("body")
    caplog.set_level(logging.INFO)
    with respx.mock(assert_all_called=False) as fhir, TestClient(app) as client:
        fhir.get(url__startswith="http://127.0.0.1:8091/").mock(side_effect=_empty_fhir)
        if request_doc["method"] == "GET":
            responses = [client.get("/cds-services", headers=headers)]
        elif name.startswith("feedback"):
            responses = [
                client.post("/cds-services/va-preprocedure-order-sign/feedback", json=body, headers=headers)
            ]
        else:
            responses = [
                client.post(f"/cds-services/{sid}", json=body, headers=headers)
                for sid in SERVICE_FOR_HOOK[body["hook"]]
            ]
    for r in responses:
        assert 200 <= r.status_code < 300, r.text
        assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors == [], [e.getMessage() for e in errors]


def test_every_fixture_file_was_replayed() -> None:
    names = {n.split(":")[0] for n, _ in captured()}
    files = {p.stem for p in FIXTURES.glob("*.json")} - {"fhir"}  # fhir.json records the FHIR server's side
    assert names == files
