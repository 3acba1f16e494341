"""Fixtures for the service core: an app with a test-only CDS service (the core ships none of its own)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.contracts import CardSpec, HookInput, ServiceDefinition
from cds_service.settings import Settings
from hooks.common import data_unavailable_card

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FHIR = "https://ehr.example.org/fhir"

CHECKS = {"meds": ("anticoagulant review",), "labs": ("INR check",), "patient": ("age",)}


def _handler(inp: HookInput) -> list[CardSpec]:
    cards = [
        CardSpec(
            rule_id="test.anticoagulant",
            indicator="warning",
            summary=f"{m.ingredient} is active",
            detail="Test card.",
            citation="test",
            evidence=(m.evidence,),
        )
        for m in inp.facts.active_medications(["anticoagulant"])
    ]
    unavailable = data_unavailable_card(inp, CHECKS)
    if unavailable:
        cards.append(unavailable)
    return cards


TEST_SERVICE = ServiceDefinition(
    id="test-service",
    hook="order-sign",
    title="Test service",
    description="A service that exists only in the core's tests.",
    prefetch={
        "patient": "Patient/{{context.patientId}}",
        "meds": "MedicationRequest?patient={{context.patientId}}&status=active",
        "labs": "Observation?patient={{context.patientId}}&code=http://loinc.org|6301-6&_sort=-date&_count=10",
    },
    usage_requirements="Needs the meds and labs prefetch, or fhirServer access.",
    checks_by_key=CHECKS,
    handler=_handler,
)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "auth_mode": "off",
        "database_url": f"sqlite:///{tmp_path}/va-cds.db",
        # The FHIR bases these tests name (respx-mocked; 8091 is the captured sandbox's local server).
        "fhir_servers": [FHIR, "http://127.0.0.1:8091"],
    }
    values.update(overrides)
    if values["auth_mode"] == "required":
        # With auth on the JWT aud is checked against the configured public URL, never the Host header;
        # TestClient calls http://testserver.
        values.setdefault("public_base_url", "http://testserver")
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path), services=[TEST_SERVICE], clock=lambda: NOW)
    with TestClient(app) as c:
        yield c


def warfarin_request(rid: str = "mr1", patient: str | None = None) -> dict:
    """An active warfarin order. `patient` names its subject; without one it names none (tests with other
    context patient ids reuse it, and another patient's resource is ignored: catalog V2.4)."""
    order = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "855332",
                    "display": "warfarin 5 MG Oral Tablet",
                }
            ]
        },
        "authoredOn": "2026-10-01",
    }
    if patient is not None:
        order["subject"] = {"reference": f"Patient/{patient}"}
    return order


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hook_body(hook: str = "order-sign", prefetch: dict | None = None, **extra: object) -> dict:
    context: dict = {"userId": "Practitioner/u1", "patientId": "p1"}
    if hook in ("order-sign", "order-select"):
        context["draftOrders"] = {"resourceType": "Bundle", "entry": []}
    body: dict = {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body
