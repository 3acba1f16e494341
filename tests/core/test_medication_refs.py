"""V2.4: a medicationReference the request did not resolve is fetched from fhirServer, once per Medication;
a failed fetch leaves the medication unidentified and names the check in sys.data-unavailable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.contracts import MEDICATION_REFS_KEY, CardSpec, HookInput, ServiceDefinition
from cds_service.medication_refs import medication_id, unresolved_references
from hooks.common import data_unavailable_card
from tests.core.conftest import FHIR, NOW, make_settings

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
CHECKS = {"meds": ("anticoagulant review",)}  # the core names MEDICATION_REFS_KEY's checks for every family


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
    if inp.facts.unidentified_medications:
        cards.append(
            CardSpec(
                rule_id="test.unidentified",
                indicator="info",
                summary=f"{len(inp.facts.unidentified_medications)} medication(s) could not be identified",
                detail="Test card.",
                citation="test",
                evidence=tuple(inp.facts.unidentified_medications),
            )
        )
    unavailable = data_unavailable_card(inp, CHECKS)
    if unavailable:
        cards.append(unavailable)
    return cards


SERVICE = ServiceDefinition(
    id="med-ref-service",
    hook="order-sign",
    title="Test service",
    description="Medication references (test only).",
    prefetch={"meds": "MedicationRequest?patient={{context.patientId}}&status=active"},
    usage_requirements="",
    checks_by_key=CHECKS,
    handler=_handler,
)


def by_reference(rid: str, target: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": target},
    }


WARFARIN = {
    "resourceType": "Medication",
    "id": "w1",
    "code": {"coding": [{"system": RX, "code": "855332", "display": "warfarin sodium 5 MG Oral Tablet"}]},
}


def call(client: TestClient, meds: list[dict[str, Any]], *, fhir: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": "0d8c5b0e-7f1b-4c53-9d3f-2f6c1f0b9a11",
        "context": {
            "userId": "Practitioner/u1",
            "patientId": "p1",
            "draftOrders": {"resourceType": "Bundle", "entry": []},
        },
        "prefetch": {"meds": {"resourceType": "Bundle", "entry": [{"resource": m} for m in meds]}},
    }
    if fhir:
        body["fhirServer"] = FHIR
        body["fhirAuthorization"] = {
            "access_token": "tok-123",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Medication.read",
            "subject": "va-cds",
        }
    resp = client.post("/cds-services/med-ref-service", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def rules(payload: dict[str, Any]) -> list[str]:
    return [c["extension"]["org.va-cds.rule"] for c in payload["cards"]]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path), services=[SERVICE], clock=lambda: NOW)
    with respx.mock, TestClient(app) as c:
        yield c


def test_unresolved_reference_is_fetched_once_with_the_token(client: TestClient) -> None:
    route = respx.get(f"{FHIR}/Medication/w1").mock(return_value=httpx.Response(200, json=WARFARIN))
    payload = call(client, [by_reference("mr1", "Medication/w1"), by_reference("mr2", "Medication/w1")])
    assert rules(payload) == ["test.anticoagulant"]  # read as warfarin, not "no antithrombotic"
    assert route.call_count == 1  # one GET per distinct reference
    assert route.calls[0].request.headers["authorization"] == "Bearer tok-123"


def test_failed_fetch_leaves_it_unidentified_and_names_the_check(client: TestClient) -> None:
    respx.get(f"{FHIR}/Medication/w1").mock(return_value=httpx.Response(404, json={"resourceType": "X"}))
    payload = call(client, [by_reference("mr1", "Medication/w1")])
    assert sorted(rules(payload)) == ["sys.data-unavailable", "test.unidentified"]
    unavailable = next(
        c for c in payload["cards"] if c["extension"]["org.va-cds.rule"] == "sys.data-unavailable"
    )
    assert "the Medication could not be fetched" in unavailable["detail"]
    assert unavailable["extension"]["org.va-cds.policy"]["unavailable_sources"] == [MEDICATION_REFS_KEY]


def test_a_fetched_resource_that_is_not_that_medication_is_a_failure(client: TestClient) -> None:
    other = {**WARFARIN, "id": "someone-else"}
    respx.get(f"{FHIR}/Medication/w1").mock(return_value=httpx.Response(200, json=other))
    assert sorted(rules(call(client, [by_reference("mr1", "Medication/w1")]))) == [
        "sys.data-unavailable",
        "test.unidentified",
    ]


def test_without_fhir_server_nothing_is_fetched_and_nothing_reassures(client: TestClient) -> None:
    route = respx.get(f"{FHIR}/Medication/w1").mock(return_value=httpx.Response(200, json=WARFARIN))
    payload = call(client, [by_reference("mr1", "Medication/w1")], fhir=False)
    assert rules(payload) == ["test.unidentified"]  # no fetch was tried: no data-unavailable
    assert route.call_count == 0


def test_a_sent_or_contained_medication_is_not_fetched(client: TestClient) -> None:
    route = respx.get(f"{FHIR}/Medication/w1").mock(return_value=httpx.Response(200, json=WARFARIN))
    contained = {**by_reference("mr2", "#m"), "contained": [{**WARFARIN, "id": "m"}]}
    payload = call(client, [by_reference("mr1", "Medication/w1"), WARFARIN, contained])
    assert rules(payload) == ["test.anticoagulant"]
    assert route.call_count == 0


def test_references_to_other_servers_or_urns_are_never_fetched() -> None:
    assert medication_id("Medication/w1", FHIR) == "w1"
    assert medication_id(f"{FHIR}/Medication/w1/_history/2", FHIR) == "w1"
    assert medication_id("https://other.example.org/fhir/Medication/w1", FHIR) is None  # token stays home
    assert medication_id("urn:uuid:7f0b", FHIR) is None
    assert medication_id("Medication/%2E%2E/Patient", FHIR) is None  # not a FHIR id: never sent
    assert medication_id("Medication/a b", FHIR) is None
    stopped = {**by_reference("mr9", "Medication/x"), "status": "stopped"}
    assert unresolved_references([by_reference("a", "Medication/x"), stopped], [], FHIR) == ["x"]


def test_a_timed_out_fetch_is_a_failure_not_silence(client: TestClient) -> None:
    respx.get(f"{FHIR}/Medication/w1").mock(side_effect=httpx.ReadTimeout("stalled"))
    assert sorted(rules(call(client, [by_reference("mr1", "Medication/w1")]))) == [
        "sys.data-unavailable",
        "test.unidentified",
    ]
