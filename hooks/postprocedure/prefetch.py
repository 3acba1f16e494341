"""Prefetch templates of the post-procedure services and which checks read each key.

CDS Hooks 2.0 tokens only (`{{context.patientId}}`): no date tokens, so searches are bounded by codes,
`_sort=-date` and `_count`, and the rules apply their own windows. Procedures are not code-bound because
VA procedures are often coded only by text (terminology §1 keyword fallback). When a key fails
(OperationOutcome or fetch error) the checks listed for it could not run: `sys.data-unavailable` names
them, and the rules fed by it stay silent rather than claim an all-clear.
"""

from __future__ import annotations

from collections.abc import Iterable

PATIENT = "patient"
PROCEDURES = "procedures"
CONDITIONS = "conditions"
VITALS = "vitals"
LABS = "labs"
EXAM_OBSERVATIONS = "examObservations"
MEDICATIONS = "medications"
MEDICATION_STATEMENTS = "medicationStatements"
SERVICE_REQUESTS = "serviceRequests"
ALLERGIES = "allergies"
IMAGING = "imaging"

_PID = "{{context.patientId}}"


def _loinc(codes: Iterable[str]) -> str:
    return ",".join(f"http://loinc.org|{c}" for c in codes)


# terminology.md §4: SpO₂, RR, HR, BP panel/systolic, temperature, pain score (verified rows).
VITAL_CODES = (
    "59408-5",
    "2708-6",
    "9279-1",
    "8867-4",
    "85354-9",
    "8480-6",
    "8310-5",
    "8331-1",
    "72514-3",
    "38208-5",
)
# Hb, WBC, CRP, ESR, blood culture, tryptase (tryptase is a partial row: read, never ordered by a guess).
LAB_CODES = ("718-7", "6690-2", "26464-8", "1988-5", "30522-7", "30341-2", "4537-7", "600-7", "21582-2")

PREFETCH: dict[str, str] = {
    PATIENT: f"Patient/{_PID}",
    PROCEDURES: f"Procedure?patient={_PID}&_sort=-date&_count=100",
    # Every status: a resolved event (a reaction, a fracture) still has consequences after the VA.
    CONDITIONS: f"Condition?patient={_PID}&_count=200",
    VITALS: f"Observation?patient={_PID}&code={_loinc(VITAL_CODES)}&_sort=-date&_count=200",
    LABS: f"Observation?patient={_PID}&code={_loinc(LAB_CODES)}&_sort=-date&_count=200",
    # Symptoms and exams recorded as Observations (dyspnea, chest pain, neurological examination).
    EXAM_OBSERVATIONS: f"Observation?patient={_PID}&category=exam&_sort=-date&_count=100",
    MEDICATIONS: f"MedicationRequest?patient={_PID}&_sort=-authoredon&_count=100",
    MEDICATION_STATEMENTS: f"MedicationStatement?patient={_PID}&_count=100",
    SERVICE_REQUESTS: f"ServiceRequest?patient={_PID}&_sort=-authored&_count=100",
    ALLERGIES: f"AllergyIntolerance?patient={_PID}&_count=100",
    IMAGING: f"DiagnosticReport?patient={_PID}&_sort=-date&_count=100",
}

CHECK_SCOPE = "Whether a vertebral augmentation is on record (all post-procedure checks)"
CHECK_PCE = "Pulmonary cement embolism watch (post.pce.suspected)"
CHECK_NEURO = "New neurological deficit (post.neuro.deficit)"
CHECK_INFECTION = "Infection after the procedure (post.infection.suspected)"
CHECK_HEMORRHAGE = "Hemorrhage after the procedure (post.hemorrhage.suspected)"
CHECK_PLEURAL = "Pneumothorax/hemothorax (post.pleural.suspected)"
CHECK_PAIN = "Increased or severe pain (post.pain.increased)"
CHECK_FRACTURE = "New adjacent-level fracture (post.fracture.adjacent)"
CHECK_HYPERSENSITIVITY = "Hypersensitivity reaction (post.hypersensitivity)"
CHECK_BONE = "Osteoporosis therapy after the procedure (post.bone-health.untreated)"
CHECK_DUPLICATES = "Duplicate-order check for suggested work-up"

CHECKS_BY_KEY: dict[str, tuple[str, ...]] = {
    PROCEDURES: (CHECK_SCOPE, CHECK_BONE),
    CONDITIONS: (
        CHECK_PCE,
        CHECK_NEURO,
        CHECK_INFECTION,
        CHECK_HEMORRHAGE,
        CHECK_PLEURAL,
        CHECK_PAIN,
        CHECK_FRACTURE,
        CHECK_HYPERSENSITIVITY,
        CHECK_BONE,
    ),
    VITALS: (CHECK_PCE, CHECK_INFECTION, CHECK_HEMORRHAGE, CHECK_PLEURAL, CHECK_PAIN),
    LABS: (CHECK_INFECTION, CHECK_HEMORRHAGE, CHECK_HYPERSENSITIVITY, CHECK_PAIN),
    EXAM_OBSERVATIONS: (CHECK_PCE, CHECK_NEURO, CHECK_PLEURAL),
    MEDICATIONS: (CHECK_BONE,),
    MEDICATION_STATEMENTS: (CHECK_BONE,),
    SERVICE_REQUESTS: (CHECK_DUPLICATES, CHECK_BONE),
    ALLERGIES: (CHECK_HYPERSENSITIVITY,),
    IMAGING: (CHECK_BONE,),
}
# A failed source of these makes "no therapy found" (or "no cancer on record") unknown: the rule stays silent.
BONE_SOURCES = frozenset({MEDICATIONS, MEDICATION_STATEMENTS, CONDITIONS})

USAGE_REQUIREMENTS = (
    "Needs read access to the patient's Procedure, Condition, Observation (vital signs, labs, exam), "
    "MedicationRequest, MedicationStatement, ServiceRequest, AllergyIntolerance and DiagnosticReport "
    "resources. Returns no cards when no vertebral augmentation is on record within the look-back."
)
