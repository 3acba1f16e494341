"""End to end over HTTP (auth off, fixed clock): encounter-start, patient-view and encounter-discharge with
prefetched FHIR R4 resources, through the real extractor, card builder and response validation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings
from hooks import va_discharge, va_postprocedure
from hooks.policy import load_policy

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
VA_AT = NOW - timedelta(days=2)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # One app for the module: start-up (migrations, value sets) dominates the run time; calls are stateless.
    db = tmp_path_factory.mktemp("post-http") / "va-cds.db"
    settings = Settings(auth_mode="off", database_url=f"sqlite:///{db}")  # type: ignore[call-arg]
    policy = load_policy()
    services = [*va_postprocedure.services(policy), *va_discharge.services(policy)]
    with TestClient(create_app(settings, services=services, clock=lambda: NOW)) as c:
        yield c


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def va_procedure(encounter: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": "va1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {
            "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}],
            "text": "Kyphoplasty T12",
        },
        "performedPeriod": {"start": VA_AT.isoformat(), "end": (VA_AT + timedelta(minutes=50)).isoformat()},
    }
    if encounter:
        body["encounter"] = {"reference": f"Encounter/{encounter}"}
    return body


def spo2(value: float, when: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "spo2-1",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
    }


ALENDRONATE = {
    "resourceType": "MedicationRequest",
    "id": "mr-aln",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "904419",
                "display": "Alendronic acid 10 MG Oral Tablet",
            }
        ]
    },
    "subject": {"reference": "Patient/p1"},
    "authoredOn": "2025-01-10",
}
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1948-03-02", "gender": "female"}


def prefetch(service: str, **given: Any) -> dict[str, Any]:
    """Every prefetch key of the service (empty searchsets unless given): no FHIR server is needed."""
    svc = va_postprocedure.PREFETCH if service == "va-postprocedure" else va_discharge.PREFETCH
    out: dict[str, Any] = {key: searchset() for key in svc}
    out["patient"] = PATIENT
    if "encounter" in out:
        out["encounter"] = {
            "resourceType": "Encounter",
            "id": "enc1",
            "status": "in-progress",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": (VA_AT - timedelta(hours=3)).isoformat()},
        }
    out.update(given)
    return out


def body(hook: str, pre: dict[str, Any], encounter: bool = True) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/u1", "patientId": "p1"}
    if encounter:
        context["encounterId"] = "enc1"
    return {
        "hook": hook,
        "hookInstance": "5c1ad4a7-2c2e-4a36-9b58-6cb3f6b0e9a1",
        "context": context,
        "prefetch": pre,
    }


def rules(response: Any) -> list[str]:
    return [c["extension"]["org.va-cds.rule"] for c in response.json()["cards"]]


def test_discovery_lists_the_post_and_discharge_services(client: TestClient) -> None:
    pairs = [(s["id"], s["hook"]) for s in client.get("/cds-services").json()["services"]]
    assert ("va-postprocedure-encounter-start", "encounter-start") in pairs
    assert ("va-postprocedure-patient-view", "patient-view") in pairs
    assert ("va-discharge", "encounter-discharge") in pairs


def test_encounter_start_with_desaturation_after_the_va_gives_pce_card(client: TestClient) -> None:
    pre = prefetch(
        "va-postprocedure",
        procedures=searchset(va_procedure()),
        vitals=searchset(spo2(88, VA_AT + timedelta(hours=4))),
        medications=searchset(ALENDRONATE),
    )
    r = client.post("/cds-services/va-postprocedure-encounter-start", json=body("encounter-start", pre))
    assert r.status_code == 200
    assert rules(r) == ["post.pce.suspected"]
    card = r.json()["cards"][0]
    assert card["indicator"] == "critical" and len(card["summary"]) < 140
    assert card["source"]["url"].endswith("/docs/rules/post.pce.suspected")
    refs = [e["reference"] for e in card["extension"]["org.va-cds.evidence"]]
    assert "Procedure/va1" in refs and "Observation/spo2-1" in refs
    assert card["extension"]["org.va-cds.policy"]["spo2_min_percent"] == 92
    codes = [s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"]]
    assert codes == ["36643-5", "79077-4", "29303009"]  # chest X-ray, CTPA, ECG
    assert all(s["uuid"] for s in card["suggestions"]) and card["selectionBehavior"] == "any"
    assert card["suggestions"][0]["actions"][0]["resource"]["encounter"] == {"reference": "Encounter/enc1"}


def test_same_desaturation_before_the_va_is_baseline(client: TestClient) -> None:
    pre = prefetch(
        "va-postprocedure",
        procedures=searchset(va_procedure()),
        vitals=searchset(spo2(88, VA_AT - timedelta(days=1))),
        medications=searchset(ALENDRONATE),
    )
    r = client.post("/cds-services/va-postprocedure-encounter-start", json=body("encounter-start", pre))
    assert rules(r) == ["post.followup"]


def test_patient_view_without_therapy_gives_bone_health_card(client: TestClient) -> None:
    pre = prefetch("va-postprocedure", procedures=searchset(va_procedure()))
    r = client.post(
        "/cds-services/va-postprocedure-patient-view", json=body("patient-view", pre, encounter=False)
    )
    assert r.status_code == 200
    assert rules(r) == ["post.bone-health.untreated"]
    card = r.json()["cards"][0]
    labels = [s["label"] for s in card["suggestions"]]
    assert labels[0] == "Order DXA scan" and "Refer to falls clinic" in labels


def test_no_va_gives_empty_cards(client: TestClient) -> None:
    pre = prefetch("va-postprocedure", vitals=searchset(spo2(80, NOW - timedelta(hours=3))))
    r = client.post("/cds-services/va-postprocedure-encounter-start", json=body("encounter-start", pre))
    assert r.json() == {"cards": []}
    r = client.post("/cds-services/va-discharge", json=body("encounter-discharge", prefetch("va-discharge")))
    assert r.json() == {"cards": []}


def test_failed_procedures_source_gives_only_data_unavailable(client: TestClient) -> None:
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    r = client.post(
        "/cds-services/va-postprocedure-encounter-start",
        json=body("encounter-start", prefetch("va-postprocedure", procedures=oo)),
    )
    assert rules(r) == ["sys.data-unavailable"]


def test_encounter_discharge_checklist(client: TestClient) -> None:
    pre = prefetch("va-discharge", procedures=searchset(va_procedure(encounter="enc1")))
    r = client.post("/cds-services/va-discharge", json=body("encounter-discharge", pre))
    assert r.status_code == 200
    got = rules(r)
    assert got[:2] == ["discharge.neuro-exam-missing", "discharge.bone-health"]  # warnings first
    assert set(got[2:]) == {"discharge.red-flags", "discharge.documentation", "discharge.followup"}
    for card in r.json()["cards"]:
        assert len(card["summary"]) < 140
        assert card["extension"]["org.va-cds.citation"]
