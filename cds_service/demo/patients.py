"""The demo patients: synthetic FHIR R4 records written for the sandbox walkthrough, dated from `now`.

Each patient shows one part of va-cds (see the README's sandbox walkthrough):

* `demo-planned-warfarin`: a kyphoplasty planned in four days, on warfarin, INR 2.6 two days ago
  (pre-procedure readiness on Patient View; the planned-VA card when warfarin is signed on Rx Sign).
* `demo-post-hypoxaemia`: a vertebroplasty two days ago, then SpO₂ 86 %, a fast breathing rate and dyspnoea.
* `demo-post-infection`: a kyphoplasty three weeks ago, then fever and a CRP rising over ten days.
* `demo-discharge-no-neuro`: a vertebroplasty this morning, being discharged with no neurological exam.

Names say "Demo" and every resource carries the HL7 `HTEST` (test health data) security tag.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

Resource = dict[str, Any]

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
TEST_DATA_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "HTEST",
    "display": "test health data",
}

PLANNED_WARFARIN = "demo-planned-warfarin"
POST_HYPOXAEMIA = "demo-post-hypoxaemia"
POST_INFECTION = "demo-post-infection"
DISCHARGE_NO_NEURO = "demo-discharge-no-neuro"
PATIENT_IDS = (PLANNED_WARFARIN, POST_HYPOXAEMIA, POST_INFECTION, DISCHARGE_NO_NEURO)
#: The encounter the discharge patient is leaving (context.encounterId of encounter-discharge).
DISCHARGE_ENCOUNTER = "demo-discharge-encounter"


def _at(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def _patient(pid: str, given: str, gender: str, birth: str) -> Resource:
    return {
        "resourceType": "Patient",
        "id": pid,
        "active": True,
        "name": [{"use": "usual", "family": "Demo", "given": [given], "text": f"{given} Demo (synthetic)"}],
        "gender": gender,
        "birthDate": birth,
    }


def _subject(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def _obs(
    pid: str, rid: str, code: str, display: str, value: float, unit: str, ucum: str, when: datetime, cat: str
) -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": cat}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": _subject(pid),
        "effectiveDateTime": _at(when),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def _condition(pid: str, rid: str, code: str, display: str, onset: datetime) -> Resource:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
        "subject": _subject(pid),
        "onsetDateTime": _at(onset),
        "recordedDate": _at(onset),
    }


def _fracture(pid: str, level: str, onset: datetime) -> Resource:
    return _condition(
        pid, f"{pid}-fracture", "240198002", f"Osteoporotic vertebral collapse ({level})", onset
    )


def _va(
    pid: str, code: str, display: str, level: str, start: datetime, encounter: str | None = None
) -> Resource:
    proc: Resource = {
        "resourceType": "Procedure",
        "id": f"{pid}-va",
        "status": "completed",
        "code": {
            "coding": [{"system": CPT, "code": code, "display": display}],
            "text": f"{display} ({level})",
        },
        "subject": _subject(pid),
        "performedPeriod": {"start": _at(start), "end": _at(start + timedelta(minutes=50))},
        "bodySite": [{"text": level}],
    }
    if encounter:
        proc["encounter"] = {"reference": f"Encounter/{encounter}"}
    return proc


def _planned_warfarin(now: datetime) -> list[Resource]:
    pid = PLANNED_WARFARIN
    day = timedelta(days=1)
    lab = now - 2 * day
    return [
        _patient(pid, "Walter", "male", "1946-04-12"),
        _fracture(pid, "T12", now - 30 * day),
        _condition(pid, f"{pid}-af", "49436004", "Atrial fibrillation", now - 900 * day),
        {
            "resourceType": "MedicationRequest",
            "id": f"{pid}-warfarin",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": RXNORM, "code": "855332", "display": "warfarin sodium 5 MG Oral Tablet"}
                ],
                "text": "warfarin sodium 5 MG Oral Tablet",
            },
            "subject": _subject(pid),
            "authoredOn": _at(now - 200 * day),
            "dosageInstruction": [{"text": "5 mg by mouth once daily"}],
        },
        _obs(
            pid,
            f"{pid}-inr",
            "6301-6",
            "INR in Platelet poor plasma by Coagulation assay",
            2.6,
            "{INR}",
            "{INR}",
            lab,
            "laboratory",
        ),
        _obs(
            pid,
            f"{pid}-plt",
            "777-3",
            "Platelets [#/volume] in Blood by Automated count",
            214,
            "10*3/uL",
            "10*3/uL",
            lab,
            "laboratory",
        ),
        _obs(
            pid,
            f"{pid}-wbc",
            "6690-2",
            "Leukocytes [#/volume] in Blood by Automated count",
            7.1,
            "10*3/uL",
            "10*3/uL",
            lab,
            "laboratory",
        ),
        _obs(
            pid,
            f"{pid}-crp",
            "1988-5",
            "C reactive protein [Mass/volume] in Serum or Plasma",
            3,
            "mg/L",
            "mg/L",
            lab,
            "laboratory",
        ),
        _obs(
            pid,
            f"{pid}-creat",
            "2160-0",
            "Creatinine [Mass/volume] in Serum or Plasma",
            0.9,
            "mg/dL",
            "mg/dL",
            lab,
            "laboratory",
        ),
        _obs(pid, f"{pid}-temp", "8310-5", "Body temperature", 36.8, "Cel", "Cel", now - day, "vital-signs"),
        _obs(pid, f"{pid}-weight", "29463-7", "Body weight", 74, "kg", "kg", now - 2 * day, "vital-signs"),
        {
            "resourceType": "DiagnosticReport",
            "id": f"{pid}-mri",
            "status": "final",
            "category": [
                {"coding": [{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}]}
            ],
            "code": {
                "coding": [{"system": LOINC, "code": "36532-0", "display": "MR Thoracic spine WO contrast"}]
            },
            "subject": _subject(pid),
            "effectiveDateTime": _at(now - 12 * day),
            "conclusion": "Acute osteoporotic T12 compression fracture, marrow oedema, no retropulsion.",
        },
        {
            "resourceType": "ServiceRequest",
            "id": f"{pid}-kyphoplasty",
            "status": "active",
            "intent": "order",
            "code": {
                "coding": [
                    {
                        "system": CPT,
                        "code": "22513",
                        "display": "Percutaneous vertebral augmentation (kyphoplasty), thoracic",
                    }
                ],
                "text": "Kyphoplasty T12",
            },
            "subject": _subject(pid),
            "authoredOn": _at(now - 3 * day),
            "occurrenceDateTime": _at(now + 4 * day),  # inside warfarin's 5-day hold: Rx Sign warns
            "reasonReference": [{"reference": f"Condition/{pid}-fracture"}],
        },
    ]


def _post_hypoxaemia(now: datetime) -> list[Resource]:
    pid = POST_HYPOXAEMIA
    va_at = now - timedelta(days=2)
    after = now - timedelta(hours=20)
    return [
        _patient(pid, "Hanna", "female", "1941-09-03"),
        _fracture(pid, "T8", now - timedelta(days=40)),
        _va(pid, "22510", "Percutaneous vertebroplasty, 1 vertebral body; cervicothoracic", "T8", va_at),
        _obs(
            pid,
            f"{pid}-spo2",
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            86,
            "%",
            "%",
            after,
            "vital-signs",
        ),
        _obs(pid, f"{pid}-rr", "9279-1", "Respiratory rate", 28, "/min", "/min", after, "vital-signs"),
        _obs(pid, f"{pid}-hr", "8867-4", "Heart rate", 116, "/min", "/min", after, "vital-signs"),
        _condition(pid, f"{pid}-dyspnoea", "267036007", "Dyspnea", after),
    ]


def _post_infection(now: datetime) -> list[Resource]:
    pid = POST_INFECTION
    day = timedelta(days=1)
    crp = "C reactive protein [Mass/volume] in Serum or Plasma"
    return [
        _patient(pid, "Ivo", "male", "1950-01-27"),
        _fracture(pid, "L2", now - 50 * day),
        _va(
            pid, "22513", "Percutaneous vertebral augmentation (kyphoplasty), thoracic", "L1", now - 21 * day
        ),
        _obs(pid, f"{pid}-crp-1", "1988-5", crp, 6, "mg/L", "mg/L", now - 11 * day, "laboratory"),
        _obs(pid, f"{pid}-crp-2", "1988-5", crp, 48, "mg/L", "mg/L", now - 4 * day, "laboratory"),
        _obs(pid, f"{pid}-crp-3", "1988-5", crp, 112, "mg/L", "mg/L", now - day, "laboratory"),
        _obs(
            pid,
            f"{pid}-wbc",
            "6690-2",
            "Leukocytes [#/volume] in Blood by Automated count",
            14.8,
            "10*3/uL",
            "10*3/uL",
            now - day,
            "laboratory",
        ),
        _obs(
            pid,
            f"{pid}-temp",
            "8310-5",
            "Body temperature",
            38.7,
            "Cel",
            "Cel",
            now - 10 * timedelta(hours=1),
            "vital-signs",
        ),
    ]


def _discharge_no_neuro(now: datetime) -> list[Resource]:
    pid = DISCHARGE_NO_NEURO
    admitted = now - timedelta(hours=8)
    return [
        _patient(pid, "Dora", "female", "1944-06-18"),
        _fracture(pid, "L1", now - timedelta(days=25)),
        {
            "resourceType": "Encounter",
            "id": DISCHARGE_ENCOUNTER,
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "SS",
                "display": "short stay",
            },
            "subject": _subject(pid),
            "period": {"start": _at(admitted)},
        },
        _va(
            pid,
            "22511",
            "Percutaneous vertebroplasty, 1 vertebral body; lumbosacral",
            "L1",
            now - timedelta(hours=5),
            DISCHARGE_ENCOUNTER,
        ),
    ]


PATIENTS: tuple[Callable[[datetime], list[Resource]], ...] = (
    _planned_warfarin,
    _post_hypoxaemia,
    _post_infection,
    _discharge_no_neuro,
)


def demo_resources(now: datetime) -> list[Resource]:
    """Every demo resource, dated relative to `now` (an aware datetime), tagged as test data."""
    out: list[Resource] = []
    for build in PATIENTS:
        for resource in build(now):
            resource["meta"] = {"lastUpdated": _at(now), "security": [TEST_DATA_TAG]}
            out.append(resource)
    return out
