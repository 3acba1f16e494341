"""V2.4/V2.10: resources of another patient and resources dated after the request time are left out as
evidence and counted in the call's audit record (`fhir_outcomes["ignored:…"]`)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi.testclient import TestClient

from cds_service.persistence import AuditRecord
from tests.core.conftest import warfarin_request


def _audit(client: TestClient, instance: str) -> AuditRecord:
    store = client.app.state.va.store  # type: ignore[attr-defined]
    for _ in range(50):  # written off the response path
        record = store.find_audit(instance)
        if record is not None:
            return record  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("no audit record")


def _call(client: TestClient, meds: list[dict[str, Any]]) -> tuple[list[str], AuditRecord]:
    instance = str(uuid.uuid4())
    body = {
        "hook": "order-sign",
        "hookInstance": instance,
        "context": {
            "userId": "Practitioner/u1",
            "patientId": "p1",
            "draftOrders": {"resourceType": "Bundle", "entry": []},
        },
        "prefetch": {
            "patient": None,
            "labs": None,
            "meds": {"resourceType": "Bundle", "entry": [{"resource": m} for m in meds]},
        },
    }
    resp = client.post("/cds-services/test-service", json=body)
    assert resp.status_code == 200, resp.text
    rules = [c["extension"]["org.va-cds.rule"] for c in resp.json()["cards"]]
    return rules, _audit(client, instance)


def test_other_patients_and_future_resources_are_counted_not_used(client: TestClient) -> None:
    other = {**warfarin_request("mr-other"), "subject": {"reference": "Patient/p2"}}
    ahead = {
        "resourceType": "MedicationStatement",
        "id": "ms-future",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": warfarin_request()["medicationCodeableConcept"],
        "effectiveDateTime": "2027-06-01",
    }
    rules, record = _call(client, [other, ahead])
    assert rules == []  # neither is evidence of an active anticoagulant
    assert record.fhir_outcomes["ignored:other-patient"] == "1"
    assert record.fhir_outcomes["ignored:future-dated"] == "1"


def test_the_patients_own_resources_are_used_and_nothing_is_counted(client: TestClient) -> None:
    mine = {**warfarin_request("mr1"), "subject": {"reference": "Patient/p1"}}
    rules, record = _call(client, [mine])
    assert rules == ["test.anticoagulant"]
    assert not any(k.startswith("ignored:") for k in record.fhir_outcomes)


def test_no_resources_no_counts(client: TestClient) -> None:
    rules, record = _call(client, [])
    assert rules == [] and not any(k.startswith("ignored:") for k in record.fhir_outcomes)
