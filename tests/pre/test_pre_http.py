"""va-preprocedure end to end through HTTP (one test per hook, plus the issue's 'Done when' cases)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.pre.synthea import HALLIE, record, va_draft
from tests.shared_paths import SANDBOX

PID, RESOURCES, LAST = record(HALLIE)
URL = "/cds-services/va-preprocedure-order-sign"
SELECT_URL = "/cds-services/va-preprocedure-order-select"
VIEW_URL = "/cds-services/va-preprocedure-patient-view"

_KEY_TYPES = {
    "patient": "Patient",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "coagLabs": "Observation",
    "conditions": "Condition",
    "allergies": "AllergyIntolerance",
    "imaging": "DiagnosticReport",
    "serviceRequests": "ServiceRequest",
    "appointments": "Appointment",
}


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def prefetch(extra: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Every prefetch key filled from Hallie's record (all Observations under one key: the extractor
    sorts them by code; duplicates are harmless)."""
    pool = [*RESOURCES, *extra]
    out: dict[str, Any] = {}
    for key in ("infectionLabs", "metabolicLabs", "renalLabs", "temperature", "weight"):
        out[key] = _bundle([])
    for key, rtype in _KEY_TYPES.items():
        found = [r for r in pool if r["resourceType"] == rtype]
        if rtype == "MedicationRequest":
            found = [r for r in found if r.get("status") in ("active", "on-hold")]
        out[key] = found[0] if key == "patient" else _bundle(found)
    return out


def body(hook: str, draft: list[dict[str, Any]] | None, pf: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/doc-1", "patientId": PID}
    if draft is not None:
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in draft],
        }
        if hook == "order-select":
            context["selections"] = [f"{r['resourceType']}/{r['id']}" for r in draft]
    return {
        "hook": hook,
        "hookInstance": "3f1c2a4e-9b7d-4c1e-8a5f-0d2e6b7c9a10",
        "context": context,
        "prefetch": pf,
    }


def rules(resp: Any) -> list[str]:
    return [c["extension"]["org.va-cds.rule"] for c in resp.json()["cards"]]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(auth_mode="off", database_url=f"sqlite:///{tmp_path}/va-cds.db")  # type: ignore[call-arg]
    with TestClient(create_app(settings, clock=lambda: LAST)) as c:
        yield c


def test_discovery_lists_each_id_once_with_one_hook(client: TestClient) -> None:
    services = client.get("/cds-services").json()["services"]
    ids = [s["id"] for s in services]
    assert len(ids) == len(set(ids)), "an id listed under several hooks loses all but the last in the sandbox"
    pre = {s["hook"]: s["id"] for s in services if s["id"].startswith("va-preprocedure")}
    assert pre == {
        "order-select": "va-preprocedure-order-select",
        "order-sign": "va-preprocedure-order-sign",
        "patient-view": "va-preprocedure-patient-view",
    }
    assert all(s["prefetch"]["patient"] == "Patient/{{context.patientId}}" for s in services)


def test_sandbox_style_registration_reaches_every_pre_procedure_hook(client: TestClient) -> None:
    """The CDS Hooks Sandbox stores services in a map keyed by URL, one hook per URL (the last one listed for
    a repeated id). Registering discovery that way must still leave a service for each pre-procedure hook,
    and each must answer its hook with cards."""
    registry: dict[str, str] = {}
    for s in client.get("/cds-services").json()["services"]:
        registry[f"/cds-services/{s['id']}"] = s["hook"]  # later entries of a repeated URL overwrite
    by_hook = {hook: url for url, hook in registry.items() if "va-preprocedure" in url}
    assert set(by_hook) == {"order-select", "order-sign", "patient-view"}
    for hook in ("order-select", "order-sign"):
        r = client.post(by_hook[hook], json=body(hook, [va_draft(PID)], prefetch()))
        assert r.status_code == 200
        assert "pre.checklist" in rules(r)


def findings(resp: Any) -> dict[str, str]:
    """finding id → the card rule that carries it (org.va-cds.findings)."""
    return {
        f: c["extension"]["org.va-cds.rule"]
        for c in resp.json()["cards"]
        for f in c["extension"]["org.va-cds.findings"]
    }


def test_order_sign_hallie_with_va_draft(client: TestClient) -> None:
    r = client.post(URL, json=body("order-sign", [va_draft(PID)], prefetch()))
    assert r.status_code == 200
    ids = rules(r)
    assert "pre.coag.antithrombotic-active" in ids and "pre.checklist" in ids
    assert findings(r)["pre.coag.labs-missing"] == "pre.checklist"  # work-up to do is a checklist row
    card = next(c for c in r.json()["cards"] if c["extension"]["org.va-cds.rule"] == "pre.checklist")
    assert card["source"]["url"].endswith("/docs/rules/pre.checklist")
    codes = {a["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"] for a in s["actions"]}
    assert {"6301-6", "58410-2"} <= codes
    assert all(len(c["summary"]) < 140 for c in r.json()["cards"])
    assert sum(c["indicator"] in ("warning", "critical") for c in r.json()["cards"]) <= 1


def test_order_select_sandbox_rx_view_empty_medication_returns_no_cards(client: TestClient) -> None:
    sandbox = json.loads((SANDBOX / "order-select-rx-view-empty.json").read_text())["request"]["body"]
    sandbox.pop("fhirServer", None)  # nothing may be fetched: quick scope answers before any data
    r = client.post(SELECT_URL, json=sandbox)
    assert r.status_code == 200 and r.json() == {"cards": []}


def test_order_select_clopidogrel_while_va_booked_in_three_days(client: TestClient) -> None:
    appointment = {
        "resourceType": "Appointment",
        "id": "appt-va",
        "status": "booked",
        "start": (LAST + timedelta(days=3)).isoformat(),
        "end": (LAST + timedelta(days=3, hours=2)).isoformat(),
        "serviceType": [{"text": "Kyphoplasty T12"}],
        "participant": [{"actor": {"reference": f"Patient/{PID}"}, "status": "accepted"}],
    }
    clopidogrel = {
        "resourceType": "MedicationRequest",
        "id": "rx-clop",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "309362",
                    "display": "clopidogrel 75 MG Oral Tablet",
                }
            ]
        },
    }
    r = client.post(SELECT_URL, json=body("order-select", [clopidogrel], prefetch([appointment])))
    assert r.status_code == 200
    assert rules(r) == ["pre.antithrombotic-order-while-va-planned"]
    assert "inside its 5-day hold" in r.json()["cards"][0]["summary"]


def test_why_planned_va_patient_on_warfarin_signing_a_warfarin_order_gets_the_hold_card(
    client: TestClient,
) -> None:
    # The sandbox symptom of the issue: a planned-VA patient on warfarin got "All clear!" on a warfarin order.
    planned = {
        **va_draft(PID),
        "id": "va-planned",
        "status": "active",
        "occurrenceDateTime": (LAST + timedelta(days=4)).isoformat(),
    }
    warfarin = {
        "resourceType": "MedicationRequest",
        "id": "rx-warf",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "855332",
                    "display": "Warfarin Sodium 5 MG Oral Tablet",
                }
            ]
        },
    }
    r = client.post(URL, json=body("order-sign", [warfarin], prefetch([planned])))
    assert r.status_code == 200
    assert rules(r) == ["pre.antithrombotic-order-while-va-planned"]  # only it (and sys.*) on this path
    card = r.json()["cards"][0]
    assert card["indicator"] == "warning" and "Warfarin ordered while a VA is planned" in card["summary"]


def test_patient_view_with_planned_va_shows_readiness_review(client: TestClient) -> None:
    planned = {
        **va_draft(PID),
        "id": "va-active",
        "status": "active",
        "occurrenceDateTime": (LAST + timedelta(days=14)).isoformat(),
    }
    r = client.post(VIEW_URL, json=body("patient-view", None, prefetch([planned])))
    assert r.status_code == 200
    ids = rules(r)
    assert "pre.checklist" in ids and "pre.coag.antithrombotic-active" in ids


def test_patient_view_without_planned_va_returns_no_cards(client: TestClient) -> None:
    r = client.post(VIEW_URL, json=body("patient-view", None, prefetch()))
    assert r.status_code == 200 and r.json() == {"cards": []}


def test_failed_source_is_reported_not_treated_as_missing(client: TestClient) -> None:
    pf = prefetch()
    pf["coagLabs"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    r = client.post(URL, json=body("order-sign", [va_draft(PID)], pf))
    assert "pre.coag.labs-missing" not in findings(r) and "sys.data-unavailable" in rules(r)
