"""Prefetch templates of va-preprocedure and which checks read each key.

CDS Hooks 2.0 tokens only (`{{context.patientId}}`): there are no date tokens, so every search is bounded
by codes, `_sort=-date` and `_count` instead, and the rules apply their own time windows. Labs are split
by purpose so that a failure (or a crowd of daily glucose values) in one group cannot hide another group.
"""

from __future__ import annotations

from collections.abc import Iterable

from cds_service.contracts import MEDICATION_REFS_KEY

PATIENT = "patient"
MEDICATION_REQUESTS = "medicationRequests"
MEDICATION_STATEMENTS = "medicationStatements"
COAG_LABS = "coagLabs"
INFECTION_LABS = "infectionLabs"
METABOLIC_LABS = "metabolicLabs"
RENAL_LABS = "renalLabs"
TEMPERATURE = "temperature"
WEIGHT = "weight"
CONDITIONS = "conditions"
ALLERGIES = "allergies"
IMAGING = "imaging"
SERVICE_REQUESTS = "serviceRequests"
APPOINTMENTS = "appointments"

_PID = "{{context.patientId}}"


def _loinc(codes: Iterable[str]) -> str:
    return ",".join(f"http://loinc.org|{c}" for c in codes)


# terminology.md §4 (primary + alternates, verified/partial rows)
INR_CODES = ("6301-6", "34714-6", "46418-0", "38875-1")
PLATELET_CODES = ("777-3", "26515-7", "778-1")
WBC_CODES = ("6690-2", "26464-8")
CRP_CODES = ("1988-5", "30522-7")
ESR_CODES = ("30341-2", "4537-7")
BLOOD_CULTURE_CODES = ("600-7",)
HBA1C_CODES = ("4548-4", "17856-6", "59261-8")
GLUCOSE_CODES = ("2345-7", "2339-0", "41653-7", "14749-6")
RENAL_CODES = (
    "35591-7",
    "2160-0",
    "38483-4",
    "14682-9",
    "98979-8",
    "62238-1",
    "48642-3",
    "48643-1",
    "33914-3",
)
TEMPERATURE_CODES = ("8310-5", "8331-1")
WEIGHT_CODES = ("29463-7",)
# terminology.md §7: spine MRI / CT (with and without contrast), verified rows.
SPINE_IMAGING_CODES = (
    "24968-0",
    "24980-5",
    "36067-7",
    "30679-5",
    "36532-0",
    "36531-2",
    "24967-2",
    "24981-3",
    "36400-0",
    "30620-9",
    "30597-9",
    "36530-4",
    "28566-8",
)


def _obs(codes: Iterable[str], count: int) -> str:
    return f"Observation?patient={_PID}&code={_loinc(codes)}&_sort=-date&_count={count}"


PREFETCH: dict[str, str] = {
    PATIENT: f"Patient/{_PID}",
    MEDICATION_REQUESTS: f"MedicationRequest?patient={_PID}&status=active,on-hold&_count=100",
    MEDICATION_STATEMENTS: f"MedicationStatement?patient={_PID}&status=active,intended&_count=100",
    COAG_LABS: _obs(INR_CODES + PLATELET_CODES, 50),
    INFECTION_LABS: _obs(WBC_CODES + CRP_CODES + ESR_CODES + BLOOD_CULTURE_CODES, 50),
    METABOLIC_LABS: _obs(HBA1C_CODES + GLUCOSE_CODES, 20),
    RENAL_LABS: _obs(RENAL_CODES, 10),
    TEMPERATURE: _obs(TEMPERATURE_CODES, 50),
    WEIGHT: _obs(WEIGHT_CODES, 1),
    # Conditions of every status: resolved spondylitis/discitis is itself a finding (pre.infection.history).
    CONDITIONS: f"Condition?patient={_PID}&_count=200",
    ALLERGIES: f"AllergyIntolerance?patient={_PID}&_count=100",
    IMAGING: f"DiagnosticReport?patient={_PID}&code={_loinc(SPINE_IMAGING_CODES)}&_sort=-date&_count=10",
    SERVICE_REQUESTS: f"ServiceRequest?patient={_PID}&status=active,on-hold&_count=100",
    APPOINTMENTS: f"Appointment?patient={_PID}&status=booked,arrived,checked-in&_count=50",
}

_ANTITHROMBOTIC = "Active anticoagulant/antiplatelet review (pre.coag.antithrombotic-active)"
_WARFARIN_WINDOW = "INR recheck before the VA on warfarin (pre.coag.labs-missing)"
_HOLD_RENAL = "Renal adjustment of DOAC/fondaparinux hold periods (longer hold applied while unknown)"
_INFECTION_ACTIVE = "Active infection: fever, infection diagnoses, blood cultures (pre.infection.active)"
_SCREEN = "Infection screen: WBC/CRP before the VA (pre.infection.screen-missing)"
_PLANNED = (
    "Planned vertebral augmentation vs. antithrombotic hold window "
    "(pre.antithrombotic-order-while-va-planned)"
)

CHECKS_BY_KEY: dict[str, tuple[str, ...]] = {
    PATIENT: (_HOLD_RENAL + " — age/sex for Cockcroft–Gault",),
    MEDICATION_REQUESTS: (
        _ANTITHROMBOTIC,
        _WARFARIN_WINDOW,
        "Immunosuppressant therapy (pre.infection.risk-factors)",
    ),
    MEDICATION_STATEMENTS: (
        _ANTITHROMBOTIC,
        _WARFARIN_WINDOW,
        "Immunosuppressant therapy (pre.infection.risk-factors)",
    ),
    COAG_LABS: (
        "INR and platelet count in range (pre.coag.labs-out-of-range)",
        "INR and platelet count on file (pre.coag.labs-missing)",
    ),
    INFECTION_LABS: (
        "Positive blood culture within 14 days (pre.infection.active)",
        "Raised WBC/CRP (pre.infection.labs-abnormal)",
        _SCREEN,
    ),
    METABOLIC_LABS: ("HbA1c/glucose control in diabetes (pre.optimization.glycemic)",),
    RENAL_LABS: (_HOLD_RENAL,),
    TEMPERATURE: ("Fever within 72 h (pre.infection.active)",),
    WEIGHT: (_HOLD_RENAL + " — weight for Cockcroft–Gault",),
    CONDITIONS: (
        _INFECTION_ACTIVE,
        "Prior spondylitis/discitis/osteomyelitis (pre.infection.history)",
        "Diabetes/immunosuppression (pre.infection.risk-factors)",
        "Bleeding disorder, thrombocytopenia, chronic liver disease (pre.coag.coagulopathy)",
        "New cord/cauda equina compression, myelopathy, motor deficit (pre.indication.neuro-red-flags)",
        "Retropulsion or posterior wall involvement (pre.indication.posterior-wall)",
        "COPD, sleep apnoea, heart failure (pre.sedation.cardiopulmonary)",
        "Diabetes for glycemic control (pre.optimization.glycemic)",
    ),
    ALLERGIES: (
        "Contrast allergy (pre.allergy.contrast)",
        "Bone cement / PMMA component allergy (pre.allergy.cement)",
    ),
    IMAGING: (
        "Recent spine MRI/CT for fracture acuity (pre.indication.concordance-missing)",
        "Imaging–pain concordance (pre.indication.concordance-discordant)",
        "Retropulsion or posterior wall involvement on imaging (pre.indication.posterior-wall)",
    ),
    SERVICE_REQUESTS: (_PLANNED, "Duplicate-order check for suggested labs, imaging and referrals"),
    APPOINTMENTS: (_PLANNED,),
    # Not a prefetch key: Medications the core fetched for unresolved medicationReferences (V2.4).
    MEDICATION_REFS_KEY: (
        "Medications named by reference (" + _ANTITHROMBOTIC + "): could not be fetched from the EHR",
    ),
}

USAGE_REQUIREMENTS = (
    "Send the prefetch keys (Patient; active/on-hold MedicationRequest and active/intended "
    "MedicationStatement; coagulation, infection, metabolic and renal lab Observations by LOINC; "
    "temperature and weight; all Conditions; AllergyIntolerance; spine imaging DiagnosticReports; "
    "active ServiceRequests; booked Appointments), or fhirServer with fhirAuthorization granting "
    "patient/*.read for Patient, MedicationRequest, MedicationStatement, Observation, Condition, "
    "AllergyIntolerance, DiagnosticReport, ServiceRequest and Appointment. order-select/order-sign: "
    "draftOrders with the vertebroplasty/kyphoplasty ServiceRequest (CPT 22510–22515) or an "
    "anticoagulant/antiplatelet MedicationRequest. A key answered with an OperationOutcome is reported "
    "as a check that could not run, never as an all-clear."
)
