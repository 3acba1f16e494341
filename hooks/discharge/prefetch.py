"""Prefetch templates of va-discharge and which checks read each key (CDS Hooks 2.0 tokens only).

encounterId is a required context field of encounter-discharge, so the Encounter token always resolves.
"""

from __future__ import annotations

PATIENT = "patient"
PROCEDURES = "procedures"
CONDITIONS = "conditions"
EXAM_OBSERVATIONS = "examObservations"
MEDICATIONS = "medications"
MEDICATION_STATEMENTS = "medicationStatements"
SERVICE_REQUESTS = "serviceRequests"
IMAGING = "imaging"
ENCOUNTER = "encounter"

_PID = "{{context.patientId}}"

PREFETCH: dict[str, str] = {
    PATIENT: f"Patient/{_PID}",
    # Not code-bound: VA procedures are often coded only by text (terminology §1 keyword fallback).
    PROCEDURES: f"Procedure?patient={_PID}&_sort=-date&_count=100",
    CONDITIONS: f"Condition?patient={_PID}&_count=200",
    EXAM_OBSERVATIONS: f"Observation?patient={_PID}&category=exam&_sort=-date&_count=100",
    MEDICATIONS: f"MedicationRequest?patient={_PID}&_sort=-authoredon&_count=100",
    MEDICATION_STATEMENTS: f"MedicationStatement?patient={_PID}&_count=100",
    SERVICE_REQUESTS: f"ServiceRequest?patient={_PID}&_sort=-authored&_count=100",
    IMAGING: f"DiagnosticReport?patient={_PID}&_sort=-date&_count=100",
    ENCOUNTER: "Encounter/{{context.encounterId}}",
}

CHECK_SCOPE = "Whether a vertebral augmentation is on record for this discharge (all discharge checks)"
CHECK_NEURO = "Post-procedure neurological exam documented (discharge.neuro-exam-missing)"
CHECK_DOC = "Procedure documentation completeness (discharge.documentation)"
CHECK_BONE = "Bone-health plan before discharge (discharge.bone-health)"
CHECKS_BY_KEY: dict[str, tuple[str, ...]] = {
    PROCEDURES: (CHECK_SCOPE, CHECK_NEURO, CHECK_DOC, CHECK_BONE),
    EXAM_OBSERVATIONS: (CHECK_NEURO,),
    CONDITIONS: (CHECK_NEURO, CHECK_BONE),
    MEDICATIONS: (CHECK_BONE,),
    MEDICATION_STATEMENTS: (CHECK_BONE,),
    SERVICE_REQUESTS: (CHECK_BONE,),
    IMAGING: (CHECK_BONE,),
    ENCOUNTER: (CHECK_SCOPE,),
}
# Sources the neuro-exam check reads: when one failed, "no exam found" is unknown, not missing.
NEURO_SOURCES = frozenset({PROCEDURES, EXAM_OBSERVATIONS})
BONE_SOURCES = frozenset({MEDICATIONS, MEDICATION_STATEMENTS, CONDITIONS})

USAGE_REQUIREMENTS = (
    "Needs read access to the discharged Encounter and the patient's Procedure, Condition, Observation, "
    "MedicationRequest, MedicationStatement, ServiceRequest and DiagnosticReport resources. Returns no "
    "cards when no vertebral augmentation is in scope."
)
