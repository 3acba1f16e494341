"""The demo data source at /demo/fhir: off unless enabled, read-only, current, and enough for every prefetch.

It is not a FHIR server; these tests pin what it promises: the CapabilityStatement, reads, the searches our
discovery's prefetch templates make (by GET and POST _search, same answer), synthetic data that builds as
strict FHIR R4, dates that move with the clock, and CORS / Private Network Access for allowed origins only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class

from cds_service.app import create_app
from cds_service.demo.patients import PATIENT_IDS, POST_INFECTION, demo_resources
from cds_service.demo.search import SUPPORTED_PARAMS
from cds_service.settings import Settings

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SANDBOX = "https://sandbox.cds-hooks.org"


def _client(tmp_path: Path, clock: datetime = NOW, **settings: Any) -> TestClient:
    values: dict[str, Any] = {"auth_mode": "off", "database_url": f"sqlite:///{tmp_path}/d.db", "demo": True}
    values.update(settings)
    app = create_app(Settings(**values), clock=lambda: clock)
    return TestClient(app, base_url="http://127.0.0.1:8080")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path) as c:
        yield c


def _ids(bundle: dict[str, Any]) -> list[str]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == len(bundle["entry"])
    return [e["resource"]["id"] for e in bundle["entry"]]


def test_off_unless_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VA_CDS_DEMO", raising=False)
    monkeypatch.delenv("VA_CDS_SETTINGS_FILE", raising=False)
    with _client(tmp_path, demo=False) as c:
        assert c.get("/demo/fhir/metadata").status_code == 404
        assert c.get("/demo/fhir/Patient").status_code == 404
    assert Settings(_env_file=None).demo is False  # type: ignore[call-arg]


def test_metadata_is_a_capability_statement_that_says_what_it_is(demo: TestClient) -> None:
    r = demo.get("/demo/fhir/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    cap = r.json()
    get_fhir_model_class("CapabilityStatement").model_validate(cap)
    assert "not a FHIR server" in cap["software"]["name"]
    served = {res["type"] for res in cap["rest"][0]["resource"]}
    assert {"Patient", "Condition", "Observation", "Procedure", "Encounter"} <= served


def test_read_only(demo: TestClient) -> None:
    pid = PATIENT_IDS[0]
    assert demo.get(f"/demo/fhir/Patient/{pid}").status_code == 200
    for method, path in [
        ("PUT", f"/demo/fhir/Patient/{pid}"),
        ("DELETE", f"/demo/fhir/Patient/{pid}"),
        ("PATCH", f"/demo/fhir/Patient/{pid}"),
        ("POST", "/demo/fhir/Patient"),
    ]:
        r = demo.request(method, path, json={"resourceType": "Patient"})
        assert r.status_code == 405, (method, path, r.status_code)
        assert r.json()["resourceType"] == "OperationOutcome"


def test_bad_requests_get_a_reason(demo: TestClient) -> None:
    assert demo.get("/demo/fhir/Practitioner").status_code == 404
    assert demo.get("/demo/fhir/Patient/nobody").status_code == 404
    r = demo.get("/demo/fhir/Observation?_count=ten")
    assert r.status_code == 400 and "_count" in r.json()["issue"][0]["diagnostics"]
    r = demo.post("/demo/fhir/Observation/_search", json={"patient": "x"})
    assert r.status_code == 415


def _templates(client: TestClient) -> list[tuple[str, str]]:
    services = client.get("/cds-services").json()["services"]
    return [(s["id"], t) for s in services for t in (s.get("prefetch") or {}).values()]


def test_every_prefetch_search_of_discovery_is_answered_by_get_and_post_alike(demo: TestClient) -> None:
    templates = _templates(demo)
    assert len(templates) > 20
    searched = 0
    for pid in PATIENT_IDS:
        context = {"patientId": pid, "encounterId": "demo-discharge-encounter", "userId": "Practitioner/x"}
        for sid, template in templates:
            query = re.sub(r"\{\{context\.(\w+)\}\}", lambda m, ctx=context: ctx[m.group(1)], template)
            rtype, _, params = query.partition("?")
            if not params:
                continue  # a read (Patient/{id}, Encounter/{id}): covered by the walkthrough
            assert {name for name, _ in parse_qsl(params)} <= SUPPORTED_PARAMS, (sid, template)
            by_get = demo.get(f"/demo/fhir/{rtype}?{params}")
            by_post = demo.post(f"/demo/fhir/{rtype}/_search", content=params, headers=FORM)
            assert by_get.status_code == by_post.status_code == 200, (sid, template, by_get.text)
            assert _ids(by_get.json()) == _ids(by_post.json())
            for entry in by_get.json()["entry"]:
                assert pid in str(entry["resource"]), "only the asked patient's resources"
            searched += 1
    assert searched > 50


def test_search_sorts_and_counts(demo: TestClient) -> None:
    crp = f"patient={POST_INFECTION}&code=http://loinc.org|1988-5&_sort=-date"
    bundle = demo.get(f"/demo/fhir/Observation?{crp}").json()
    values = [e["resource"]["valueQuantity"]["value"] for e in bundle["entry"]]
    assert values == [112, 48, 6]  # newest first: the CRP rises
    latest = demo.get(f"/demo/fhir/Observation?{crp}&_count=1").json()
    assert [e["resource"]["valueQuantity"]["value"] for e in latest["entry"]] == [112]
    wrong_system = demo.get(
        f"/demo/fhir/Observation?patient={POST_INFECTION}&code=http://snomed.info/sct|1988-5"
    )
    assert _ids(wrong_system.json()) == []


def test_dates_follow_the_clock_so_the_demo_stays_current(tmp_path: Path) -> None:
    def va_start(now: datetime) -> datetime:
        with _client(tmp_path, clock=now) as c:
            proc = c.get(f"/demo/fhir/Procedure/{POST_INFECTION}-va").json()
        return datetime.fromisoformat(proc["performedPeriod"]["start"])

    assert va_start(NOW) == NOW - timedelta(days=21)
    later = NOW + timedelta(days=400)
    assert va_start(later) == later - timedelta(days=21)


def test_every_demo_resource_is_strict_fhir_and_marked_synthetic() -> None:
    resources = demo_resources(NOW)
    assert {r["id"] for r in resources if r["resourceType"] == "Patient"} == set(PATIENT_IDS)
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert resource["meta"]["security"][0]["code"] == "HTEST", resource["id"]
        if resource["resourceType"] == "Patient":
            assert "Demo" in resource["name"][0]["text"] and "synthetic" in resource["name"][0]["text"]


def _preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/cds-services",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
            "Access-Control-Request-Private-Network": "true",
        },
    )


def test_private_network_preflight_succeeds_for_allowed_origins_only(tmp_path: Path) -> None:
    with _client(tmp_path, cors_origins=[SANDBOX]) as c:
        ok = _preflight(c, SANDBOX)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == SANDBOX
        assert ok.headers["access-control-allow-private-network"] == "true"
        refused = _preflight(c, "https://elsewhere.example")
        # Refused: no Access-Control-Allow-Origin, so the browser stops there whatever else is said.
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        fhir = c.get("/demo/fhir/metadata", headers={"Origin": SANDBOX})
        assert fhir.headers["access-control-allow-origin"] == SANDBOX  # the demo data has CORS too
