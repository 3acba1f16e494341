"""End to end over HTTP (auth off, fixed clock): encounter-start, patient-view and encounter-discharge with
prefetched FHIR R4 resources, through the real extractor, card builder and response validation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.app import create_app
from cds_service.settings import Settings
from hooks import discharge, postprocedure
from hooks.discharge import prefetch as discharge_keys
from hooks.policy import load_policy
from hooks.postprocedure import prefetch as post_keys

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
VA_AT = NOW - timedelta(days=2)
ENCOUNTER_START = "/cds-services/va-postprocedure-encounter-start"
PATIENT_VIEW = "/cds-services/va-postprocedure-patient-view"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # One app for the module: start-up (migrations, value sets) dominates the run time; calls are stateless.
    db = tmp_path_factory.mktemp("post-http") / "va-cds.db"
    settings = Settings(auth_mode="off", database_url=f"sqlite:///{db}")  # type: ignore[call-arg]
    policy = load_policy()
    services = [*postprocedure.services(policy), *discharge.services(policy)]
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
    svc = post_keys.PREFETCH if service == "va-postprocedure" else discharge_keys.PREFETCH
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
    # V2.1: one hook per service id (the Sandbox keeps only the last hook of a repeated id).
    assert ("va-postprocedure-encounter-start", "encounter-start") in pairs
    assert ("va-postprocedure-patient-view", "patient-view") in pairs
    assert ("va-discharge", "encounter-discharge") in pairs
    ids = [service_id for service_id, _ in pairs]
    assert len(ids) == len(set(ids))


def test_encounter_start_with_desaturation_after_the_va_gives_pce_card(client: TestClient) -> None:
    pre = prefetch(
        "va-postprocedure",
        procedures=searchset(va_procedure()),
        vitals=searchset(spo2(88, VA_AT + timedelta(hours=4))),
        medications=searchset(ALENDRONATE),
    )
    r = client.post(ENCOUNTER_START, json=body("encounter-start", pre))
    assert r.status_code == 200
    assert rules(r) == ["post.pce.suspected"]
    card = r.json()["cards"][0]
    assert card["indicator"] == "critical" and len(card["summary"]) < 140
    assert card["source"]["url"].endswith("/docs/rules/post.pce.suspected")
    # Desaturation after a thoracic VA: one card, the pleural finding folded into it (V2.2, V2.12).
    assert card["extension"]["org.va-cds.findings"] == ["post.pce.suspected", "post.pleural.suspected"]
    assert "pneumothorax or hemothorax" in card["detail"]
    refs = [e["reference"] for e in card["extension"]["org.va-cds.evidence"]]
    assert "Procedure/va1" in refs and "Observation/spo2-1" in refs
    assert card["extension"]["org.va-cds.policy"]["spo2_critical_percent"] == 90
    assert "Policy values" not in card["detail"]
    resources = [s["actions"][0]["resource"] for s in card["suggestions"]]
    codes = [r["code"]["coding"][0]["code"] for r in resources]
    assert codes == ["36572-6", "29303009", "79077-4"]  # portable AP chest X-ray (hypoxic), ECG, CTPA
    assert {r["priority"] for r in resources} == {"stat"}  # work-up of a critical card
    assert all(s["uuid"] for s in card["suggestions"]) and card["selectionBehavior"] == "any"
    assert card["suggestions"][0]["actions"][0]["resource"]["encounter"] == {"reference": "Encounter/enc1"}


def test_same_desaturation_before_the_va_is_baseline(client: TestClient) -> None:
    pre = prefetch(
        "va-postprocedure",
        procedures=searchset(va_procedure()),
        vitals=searchset(spo2(88, VA_AT - timedelta(days=1))),
        medications=searchset(ALENDRONATE),
    )
    r = client.post(ENCOUNTER_START, json=body("encounter-start", pre))
    assert rules(r) == ["post.followup"]


def test_patient_view_without_therapy_gives_bone_health_card(client: TestClient) -> None:
    pre = prefetch("va-postprocedure", procedures=searchset(va_procedure()))
    r = client.post(PATIENT_VIEW, json=body("patient-view", pre, encounter=False))
    assert r.status_code == 200
    assert rules(r) == ["post.bone-health.untreated"]
    card = r.json()["cards"][0]
    labels = [s["label"] for s in card["suggestions"]]
    assert labels[0] == "Order DXA scan" and "Refer to falls clinic" in labels


def test_no_va_gives_empty_cards(client: TestClient) -> None:
    pre = prefetch("va-postprocedure", vitals=searchset(spo2(80, NOW - timedelta(hours=3))))
    r = client.post(ENCOUNTER_START, json=body("encounter-start", pre))
    assert r.json() == {"cards": []}
    r = client.post("/cds-services/va-discharge", json=body("encounter-discharge", prefetch("va-discharge")))
    assert r.json() == {"cards": []}


def test_failed_procedures_source_gives_only_data_unavailable(client: TestClient) -> None:
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    r = client.post(
        ENCOUNTER_START,
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


# ---- property over generated requests: one order per response (V2.7) ------------------------------------

_CONDITIONS = {  # SNOMED codes from terminology.md (verified rows); text where the catalog reads text
    "PE": {"coding": [{"system": "http://snomed.info/sct", "code": "59282003"}]},
    "pneumothorax": {"coding": [{"system": "http://snomed.info/sct", "code": "36118008"}]},
    "hemothorax": {"coding": [{"system": "http://snomed.info/sct", "code": "31892009"}]},
    "anaphylaxis": {"coding": [{"system": "http://snomed.info/sct", "code": "39579001"}]},
    "cauda equina": {"coding": [{"system": "http://snomed.info/sct", "code": "192970008"}]},
    "dyspnea": {"text": "Dyspnea"},
    "sciatica": {"text": "Sciatica"},
    "hematoma": {"text": "Retroperitoneal hematoma"},
    "discitis": {"coding": [{"system": "http://snomed.info/sct", "code": "302935008"}]},
}
_OBSERVATIONS = {  # LOINC, UCUM unit, value range
    "59408-5": ("%", 80, 100),
    "9279-1": ("/min", 10, 36),
    "8867-4": ("/min", 50, 140),
    "8480-6": ("mm[Hg]", 70, 150),
    "718-7": ("g/dL", 6, 15),
    "8310-5": ("Cel", 36, 40),
    "1988-5": ("mg/L", 0, 120),
    "72514-3": ("{score}", 0, 10),
}


def _condition(i: int, name: str, hours: int) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"c{i}",
        "subject": {"reference": "Patient/p1"},
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": _CONDITIONS[name],
        "onsetDateTime": (VA_AT + timedelta(hours=hours)).isoformat(),
    }


def _observation(i: int, code: str, fraction: float, hours: int) -> dict[str, Any]:
    unit, low, high = _OBSERVATIONS[code]
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": (VA_AT + timedelta(hours=hours)).isoformat(),
        "valueQuantity": {
            "value": round(low + (high - low) * fraction, 1),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


# Mostly after the VA (where findings count), sometimes before it (baseline); never after now.
_hours = st.one_of(st.integers(min_value=1, max_value=47), st.integers(min_value=-240, max_value=0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(sorted(_CONDITIONS)), _hours), max_size=5),
    st.lists(st.tuples(st.sampled_from(sorted(_OBSERVATIONS)), st.floats(0, 1), _hours), max_size=8),
    st.sampled_from([ENCOUNTER_START, PATIENT_VIEW]),
)
def test_no_response_suggests_the_same_order_twice(
    client: TestClient, conds: list[tuple[str, int]], obs: list[tuple[str, float, int]], url: str
) -> None:
    conditions = [_condition(i, name, h) for i, (name, h) in enumerate(conds)]
    observations = [_observation(i, code, f, h) for i, (code, f, h) in enumerate(obs)]
    pre = prefetch(
        "va-postprocedure",
        procedures=searchset(va_procedure()),
        conditions=searchset(*conditions),
        vitals=searchset(
            *[o for o in observations if o["code"]["coding"][0]["code"] not in ("718-7", "1988-5")]
        ),
        labs=searchset(*[o for o in observations if o["code"]["coding"][0]["code"] in ("718-7", "1988-5")]),
    )
    hook = "encounter-start" if url == ENCOUNTER_START else "patient-view"
    r = client.post(url, json=body(hook, pre, encounter=hook == "encounter-start"))
    assert r.status_code == 200
    keys: list[str] = []
    for card in r.json()["cards"]:
        for suggestion in card.get("suggestions", []):
            resource = suggestion["actions"][0]["resource"]
            if resource["resourceType"] == "ServiceRequest":
                code = resource["code"].get("coding", [{}])[0].get("code") or resource["code"]["text"]
                keys.append("chest-xray" if code in ("36572-6", "36643-5") else code)
                if card["indicator"] == "critical":
                    assert resource["priority"] == "stat"
    assert len(keys) == len(set(keys)), keys
