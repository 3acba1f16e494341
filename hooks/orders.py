"""FHIR R4 resources the service suggests: lab, imaging and consult orders, and a procedure-reaction allergy.

Codes come from `terminology.md` §4/§7 (verified rows only; a concept without a verified code is ordered by
text alone rather than with a guessed code). Every resource is validated with fhir.resources (its R4B
models, structurally identical to R4 for ServiceRequest and AllergyIntolerance) before it leaves the
service: we build strictly what we send.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.servicerequest import ServiceRequest

from fhir_mappings.facts import ClinicalFacts

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


@dataclass(frozen=True, slots=True)
class Orderable:
    concept: str  # the id rules use, and the OrderFact concept that means "already ordered"
    label: str  # button text
    system: str | None
    code: str | None
    display: str
    category: str  # laboratory | imaging | procedure | referral
    source: str  # where the code was verified (terminology.md key)


_ORDERABLES: tuple[Orderable, ...] = (
    Orderable(
        "inr",
        "Order INR",
        LOINC,
        "6301-6",
        "INR in Platelet poor plasma by Coagulation assay",
        "laboratory",
        "EQ24 INR",
    ),
    Orderable(
        "cbc",
        "Order CBC",
        LOINC,
        "58410-2",
        "CBC panel - Blood by Automated count",
        "laboratory",
        "EQ24 2.16.840.1.113883.3.600.1482",
    ),
    Orderable(
        "crp",
        "Order CRP",
        LOINC,
        "1988-5",
        "C reactive protein [Mass/volume] in Serum or Plasma",
        "laboratory",
        "terminology §4 (verified)",
    ),
    Orderable(
        "esr",
        "Order ESR",
        LOINC,
        "30341-2",
        "Erythrocyte sedimentation rate",
        "laboratory",
        "terminology §4 (verified)",
    ),
    Orderable(
        "blood-cultures",
        "Order blood cultures",
        LOINC,
        "600-7",
        "Bacteria identified in Blood by Culture",
        "laboratory",
        "terminology §4 (verified)",
    ),
    Orderable(
        "tryptase",
        "Order serum tryptase",  # timing in the card: within 4 h of onset (catalog V2.12, NICE CG134)
        LOINC,
        "21582-2",
        "Tryptase [Mass/volume] in Serum or Plasma",
        "laboratory",
        "terminology §4 (partial: LNC)",
    ),
    # No verified code for a type & screen: ordered by text only, never with a guessed code.
    Orderable(
        "type-and-screen",
        "Order type & screen",
        None,
        None,
        "Blood type and antibody screen",
        "laboratory",
        "text only",
    ),
    Orderable(
        "mri-spine-stir",
        "Order MRI spine with STIR",
        LOINC,
        "36067-7",
        "MR Spine",
        "imaging",
        "EQ24 XRay Study",
    ),
    Orderable(
        "mri-spine-contrast",
        "Order MRI spine with and without contrast",
        LOINC,
        "36400-0",
        "MR Spine WO and W contrast IV",
        "imaging",
        "EQ24 XRay Study",
    ),
    Orderable(
        "ct-spine", "Order CT spine", LOINC, "36530-4", "CT Spine WO contrast", "imaging", "EQ24 XRay Study"
    ),
    Orderable(
        "ctpa",
        "Order CT pulmonary angiography",
        LOINC,
        "79077-4",
        "CTA Pulmonary arteries for pulmonary embolus W contrast IV",
        "imaging",
        "EQR4 XRay Study",
    ),
    Orderable(
        "chest-xray", "Order chest X-ray", LOINC, "36643-5", "XR Chest 2 Views", "imaging", "EQ24 XRay Study"
    ),
    # A hypoxic patient's chest film is taken at the bedside (catalog V2.7): the AP view.
    Orderable(
        "chest-xray-portable",
        "Order portable AP chest X-ray",
        LOINC,
        "36572-6",
        "XR Chest AP",
        "imaging",
        "EQ24 XRay Study",
    ),
    # Algorithm 3 step 3; no verified procedure code for image-guided spinal aspiration: text only.
    Orderable(
        "image-guided-aspiration",
        "Order image-guided aspiration/biopsy for culture",
        None,
        None,
        "Image-guided aspiration or biopsy of the affected disc/vertebra for culture, before antibiotics",
        "procedure",
        "text only",
    ),
    Orderable(
        "cta-cap",
        "Order CTA chest/abdomen/pelvis",
        LOINC,
        "86983-4",
        "CTA Chest+Abdomen+Pelvis vessels W contrast IV",
        "imaging",
        "EQR4 XRay Study",
    ),
    Orderable(
        "dxa",
        "Order DXA scan",
        LOINC,
        "38268-9",
        "DXA Skeletal system Views",
        "imaging",
        "EQ24 DXA 2.16.840.1.113883.3.464.1003.113.12.1051",
    ),
    Orderable(
        "ecg",
        "Order 12-lead ECG",
        SNOMED,
        "29303009",
        "Electrocardiographic procedure",
        "procedure",
        "IPS Procedures",
    ),
    Orderable(
        "consult-spine-surgery",
        "Refer to spine surgery (neurosurgery)",
        SNOMED,
        "308482002",
        "Referral to neurosurgeon",
        "referral",
        "EQ24 Referral 2.16.840.1.113883.3.464.1003.101.12.1046",
    ),
    Orderable(
        "consult-orthopedic-surgery",
        "Refer to orthopedic spine surgery",
        SNOMED,
        "308481009",
        "Referral to orthopedic surgeon",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-infectious-diseases",
        "Refer to infectious diseases",
        SNOMED,
        "306284005",
        "Referral to infectious diseases physician",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-interventional-radiology",
        "Refer to interventional radiology",
        SNOMED,
        "306299005",
        "Referral to radiologist",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-vascular-surgery",
        "Refer to vascular surgery",
        SNOMED,
        "307777008",
        "Referral to vascular surgeon",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-cardiothoracic-surgery",
        "Refer to cardiothoracic surgery",
        SNOMED,
        "183557002",
        "Referral to cardiothoracic surgeon",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-cardiology",
        "Refer to cardiology",
        SNOMED,
        "308471005",
        "Referral to cardiologist",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-allergy",
        "Refer to allergy/immunology for patch testing",
        SNOMED,
        "306272008",
        "Referral to clinical allergist",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-immunology",
        "Refer to clinical immunology",
        SNOMED,
        "308473008",
        "Referral to clinical immunologist",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-dermatology",
        "Refer to dermatology for patch testing",
        SNOMED,
        "308472003",
        "Referral to dermatologist",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-endocrinology",
        "Refer to endocrinology (bone health)",
        SNOMED,
        "306278007",
        "Referral to endocrinologist",
        "referral",
        "EQ24 Referral",
    ),
    Orderable(
        "consult-physiotherapy",
        "Refer to physiotherapy",
        SNOMED,
        "308447003",
        "Referral to physiotherapist",
        "referral",
        "EQ24 Referral",
    ),
    # Falls-clinic referral has no verified SNOMED concept (terminology §7): text only.
    Orderable(
        "consult-falls-clinic",
        "Refer to falls clinic",
        None,
        None,
        "Referral to falls prevention clinic",
        "referral",
        "text only",
    ),
)
ORDERABLES: dict[str, Orderable] = {o.concept: o for o in _ORDERABLES}

# FHIR R4 servicerequest-category example codes (SNOMED CT); 3457005 "Patient referral" for consults.
# An ECG has no fitting category in that value set, so it is sent without one.
_CATEGORY: dict[str, tuple[str, str, str] | None] = {
    "laboratory": (SNOMED, "108252007", "Laboratory procedure"),
    "imaging": (SNOMED, "363679005", "Imaging"),
    "procedure": None,
    "referral": (SNOMED, "3457005", "Patient referral"),
}


# Placeholders for the only per-patient parts of a suggested order. The resource is validated once per
# (concept, reason, note, encounter present) with these in place — fhir.resources costs ~0.3 ms per resource,
# which would otherwise dominate a hook call — and each request substitutes its ids into the validated JSON.
_PATIENT = "__va_cds_patient__"
_ENCOUNTER = "__va_cds_encounter__"


def _json_string_body(value: str) -> bytes:
    return orjson.dumps(value)[1:-1]  # JSON-escaped, without the quotes


def service_request(
    concept: str,
    patient_id: str,
    *,
    reason: str,
    encounter_id: str | None = None,
    note: str | None = None,
    priority: str | None = None,
) -> dict[str, Any]:
    """A draft ServiceRequest for one orderable concept, validated, as plain JSON.

    `priority` is a FHIR request-priority code (routine | urgent | asap | stat); None leaves it unset.
    """
    raw = _validated_service_request(concept, reason, encounter_id is not None, note, priority)
    raw = raw.replace(_PATIENT.encode(), _json_string_body(patient_id))
    if encounter_id is not None:
        raw = raw.replace(_ENCOUNTER.encode(), _json_string_body(encounter_id))
    result: dict[str, Any] = orjson.loads(raw)
    return result


@functools.lru_cache(maxsize=2048)
def _validated_service_request(
    concept: str, reason: str, with_encounter: bool, note: str | None, priority: str | None = None
) -> bytes:
    body = _service_request_body(concept, _PATIENT, reason, _ENCOUNTER if with_encounter else None, note)
    if priority is not None:
        body["priority"] = priority
    return orjson.dumps(ServiceRequest.model_validate(body).model_dump(mode="json", exclude_none=True))


def _service_request_body(
    concept: str, patient_id: str, reason: str, encounter_id: str | None, note: str | None
) -> dict[str, Any]:
    item = ORDERABLES[concept]
    code: dict[str, Any] = {"text": item.display}
    if item.system and item.code:
        code["coding"] = [{"system": item.system, "code": item.code, "display": item.display}]
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": reason}],
    }
    category = _CATEGORY[item.category]
    if category is not None:
        body["category"] = [
            {"coding": [{"system": category[0], "code": category[1], "display": category[2]}]}
        ]
    if encounter_id:
        body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    if note:
        body["note"] = [{"text": note}]
    return body


ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
# Everything given during a VA that can cause an immediate reaction (catalog V2.12): never cement alone.
PROCEDURE_CULPRITS = "bone cement (PMMA), antibiotic, contrast, chlorhexidine, latex, local anaesthetic"


def procedure_reaction_allergy(
    patient_id: str, *, reaction: str, onset: datetime, anaphylaxis: bool, note: str
) -> dict[str, Any]:
    """An unconfirmed AllergyIntolerance for a reaction during a VA, culprit undetermined (V2.6, V2.12).

    Criticality is high for anaphylaxis and unable-to-assess otherwise; the recorded reaction and its onset
    go into `reaction`, so the allergy service can test the candidates rather than assume bone cement.
    """
    body: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": "active", "display": "Active"}]},
        "verificationStatus": {
            "coding": [{"system": ALLERGY_VERIFICATION, "code": "unconfirmed", "display": "Unconfirmed"}]
        },
        "type": "allergy",
        "criticality": "high" if anaphylaxis else "unable-to-assess",
        "code": {"text": f"Undetermined agent given during vertebral augmentation ({PROCEDURE_CULPRITS})"},
        "patient": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": onset.isoformat(),
        "reaction": [
            {
                "manifestation": [{"text": reaction}],
                "onset": onset.isoformat(),
                "severity": "severe" if anaphylaxis else "moderate",
            }
        ],
        "note": [{"text": note}],
    }
    return AllergyIntolerance.model_validate(body).model_dump(mode="json", exclude_none=True)


def already_ordered(facts: ClinicalFacts, concept: str) -> bool:
    """True when the same order is in draftOrders or active on the record (no alert loop on re-sign)."""
    item = ORDERABLES.get(concept)
    code = (item.system, item.code) if item and item.system and item.code else None
    for order in (*facts.draft_orders, *facts.orders):
        if order.resource_type != "ServiceRequest":
            continue
        if order.status in ("completed", "revoked", "entered-in-error"):
            continue
        if concept in order.concepts or (code is not None and code in order.codes):
            return True
    return False


def missing_orders(facts: ClinicalFacts, concepts: Iterable[str]) -> list[str]:
    """The concepts not yet ordered, in the given order."""
    return [c for c in concepts if not already_ordered(facts, c)]
