"""extract_facts on hand-built FHIR resources: medications, observations, conditions, allergies, procedures,
orders, imaging, statuses, negations and the flush/lock and combination-aspirin traps."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_mappings.dates import parse_fhir_datetime, try_parse
from fhir_mappings.extract import extract_facts, find_level, imaging_findings

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
LNC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"


def cc(
    system: str | None = None, code: str | None = None, display: str | None = None, text: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if code is not None:
        coding: dict[str, Any] = {"system": system, "code": code}
        if display:
            coding["display"] = display
        out["coding"] = [coding]
    if text is not None:
        out["text"] = text
    return out


def mr(
    id: str, concept: dict[str, Any], status: str = "active", intent: str = "order", **kw: Any
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": intent,
        "medicationCodeableConcept": concept,
        "authoredOn": "2026-10-01",
        **kw,
    }


def obs(
    id: str,
    code: str,
    value: float | None = None,
    unit: str | None = None,
    status: str = "final",
    when: str = "2026-11-19T08:00:00Z",
    **kw: Any,
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": status,
        "code": cc(LNC, code),
        "effectiveDateTime": when,
        **kw,
    }
    if value is not None:
        r["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return r


def cond(id: str, concept: dict[str, Any], clinical: str = "active", **kw: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "code": concept,
        "clinicalStatus": {"coding": [{"code": clinical}]},
        "onsetDateTime": "2026-11-01",
        **kw,
    }


# ---------------------------------------------------------------- medications
def test_warfarin_scd_active_with_summary() -> None:
    f = extract_facts([mr("w", cc(RX, "855332", "warfarin sodium 5 MG Oral Tablet"))])
    (m,) = f.medications
    assert (m.ingredient, m.drug_class, m.active, m.draft) == ("warfarin", "anticoagulant", True, False)
    assert m.evidence.reference == "MedicationRequest/w"
    assert m.evidence.summary == "warfarin sodium 5 MG Oral Tablet (active, since 2026-10-01)"
    assert m.authored == datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "intent", "active"),
    [
        ("active", "order", True),
        ("on-hold", "plan", True),
        ("stopped", "order", False),
        ("completed", "order", False),
        ("active", "proposal", False),
        ("draft", "order", False),
    ],
)
def test_medication_request_active_rules(status: str, intent: str, active: bool) -> None:
    f = extract_facts([mr("x", cc(RX, "1364445", "apixaban 5 MG"), status=status, intent=intent)])
    assert [m.active for m in f.medications] == [active]


def test_entered_in_error_and_cancelled_medications_ignored() -> None:
    f = extract_facts(
        [mr("a", cc(RX, "855332"), status="entered-in-error"), mr("b", cc(RX, "855332"), status="cancelled")]
    )
    assert f.medications == []


def test_medication_statement_active_and_intended() -> None:
    base = {
        "resourceType": "MedicationStatement",
        "medicationCodeableConcept": cc(RX, "309362", "clopidogrel 75 MG"),
        "effectiveDateTime": "2025-01-01",
    }
    f = extract_facts(
        [
            {**base, "id": "1", "status": "active"},
            {**base, "id": "2", "status": "intended"},
            {**base, "id": "3", "status": "completed"},
        ]
    )
    assert [m.active for m in f.medications] == [True, True, False]
    assert all(m.resource_type == "MedicationStatement" for m in f.medications)


def test_medication_reference_in_transaction_bundle_by_urn_uuid() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:med-1",
                "resource": {"resourceType": "Medication", "code": cc(RX, "1232086", "rivaroxaban 20 MG")},
            },
            {
                "fullUrl": "urn:uuid:mr-1",
                "resource": {
                    "resourceType": "MedicationRequest",
                    "status": "active",
                    "intent": "order",
                    "medicationReference": {"reference": "urn:uuid:med-1"},
                },
            },
        ],
    }
    (m,) = extract_facts([bundle]).medications
    assert (m.ingredient, m.active) == ("rivaroxaban", True)
    assert m.evidence.reference == "urn:uuid:mr-1"


def test_medication_reference_contained_ingredient_and_relative() -> None:
    contained = {
        "resourceType": "MedicationRequest",
        "id": "c",
        "status": "active",
        "intent": "order",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "m1",
                "code": {"text": "Compounded product"},
                "ingredient": [{"itemCodeableConcept": cc(RX, "1191", "aspirin")}],
            }
        ],
        "medicationReference": {"reference": "#m1"},
    }
    relative = {
        "resourceType": "MedicationRequest",
        "id": "r",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/m2"},
    }
    med2 = {"resourceType": "Medication", "id": "m2", "code": cc(RX, "1037045", "dabigatran 150 MG")}
    f = extract_facts([contained, relative, med2])
    assert sorted(m.ingredient for m in f.medications) == ["aspirin", "dabigatran"]


def test_missing_medication_reference_is_a_problem() -> None:
    f = extract_facts(
        [
            {
                "resourceType": "MedicationRequest",
                "id": "z",
                "status": "active",
                "intent": "order",
                "medicationReference": {"reference": "Medication/absent"},
            }
        ]
    )
    assert f.medications == []
    assert any("MedicationRequest/z" in p for p in f.problems)


@pytest.mark.parametrize(
    "text",
    [
        "Heparin lock flush 100 unit/mL",
        "heparin sodium 10 UNT/ML flush syringe",
        "Heparin catheter lock solution",
    ],
)
def test_heparin_flush_and_lock_never_count(text: str) -> None:
    f = extract_facts([mr("h", {"text": text}), mr("h2", cc(RX, "1361615", text))])
    assert f.medications == []


def test_plain_heparin_counts() -> None:
    (m,) = extract_facts([mr("h", {"text": "Heparin 5000 units subcutaneous q12h"})]).medications
    assert (m.ingredient, m.drug_class) == ("heparin", "anticoagulant")


def test_aspirin_combination_analgesic_counts_as_antiplatelet() -> None:
    f = extract_facts(
        [mr("c", cc(RX, "999999", "Aspirin 325 MG / Butalbital 50 MG / Caffeine 40 MG Oral Tablet"))]
    )
    assert [(m.ingredient, m.drug_class) for m in f.medications] == [("aspirin", "antiplatelet")]


def test_acetaminophen_hydrocodone_is_not_an_antithrombotic() -> None:
    f = extract_facts(
        [mr("o", cc(RX, "857005", "Acetaminophen 325 MG / HYDROcodone Bitartrate 7.5 MG Oral Tablet"))]
    )
    assert f.medications == []


def test_atc_coded_medication_and_brand_text() -> None:
    f = extract_facts(
        [
            mr(
                "a",
                {"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AF02"}], "text": "Apixaban"},
            ),
            mr("b", {"text": "Xarelto 20mg daily"}),
            mr("c", {"text": "Prolia 60 mg injection"}),
        ]
    )
    assert sorted((m.ingredient, m.drug_class) for m in f.medications) == [
        ("apixaban", "anticoagulant"),
        ("denosumab", "osteoporosis"),
        ("rivaroxaban", "anticoagulant"),
    ]


def test_immunosuppressant_systemic_only_and_supplements_separate() -> None:
    f = extract_facts(
        [
            mr("p", cc(RX, "8640", "prednisone")),
            mr("f", {"text": "Fluticasone propionate 0.25 MG/ACTUAT inhaler"}),
            mr("d", {"text": "Dexamethasone 0.1 % ophthalmic drops"}),
            mr("v", {"text": "Cholecalciferol 1000 unit tablet"}),
            mr("ca", {"text": "Calcium carbonate 500 mg"}),
        ]
    )
    classes = sorted((m.ingredient, m.drug_class) for m in f.medications)
    assert classes == [
        ("calcium", "supplement"),
        ("prednisone", "immunosuppressant"),
        ("vitamin d", "supplement"),
    ]


def test_draft_medication_is_never_active() -> None:
    f = extract_facts([], draft_orders=[mr("d", cc(RX, "855332", "warfarin"), status="draft")])
    assert f.medications == []
    (m,) = f.draft_medications
    assert (m.draft, m.active, m.ingredient) == (True, False, "warfarin")
    assert "draft" in m.evidence.summary


def test_negated_medication_text_does_not_match() -> None:
    assert extract_facts([mr("n", {"text": "no aspirin"})]).medications == []


# ---------------------------------------------------------------- observations
def test_inr_summary_and_time() -> None:
    f = extract_facts([obs("i", "6301-6", 2.4, "{INR}")])
    (m,) = f.measurements
    assert (m.kind, m.value, m.unit) == ("inr", 2.4, "{INR}")
    assert m.evidence.summary == "INR 2.4 on 2026-11-19"
    assert f.latest("inr") is m


def test_converted_value_keeps_reported_value_in_summary() -> None:
    (m,) = extract_facts([obs("t", "8310-5", 101.3, "[degF]")]).measurements
    assert m.value == pytest.approx(38.5)
    assert "reported 101.3 [degF]" in m.evidence.summary


@pytest.mark.parametrize("status", ["registered", "cancelled", "entered-in-error", "unknown", None])
def test_registered_cancelled_error_unknown_observations_do_not_count(status: str | None) -> None:
    assert extract_facts([obs("p", "777-3", 20, "10*3/uL", status=status)]).measurements == []  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "preliminary"])
def test_final_amended_corrected_preliminary_count_and_keep_status(status: str) -> None:
    (m,) = extract_facts([obs("p", "777-3", 20, "10*3/uL", status=status)]).measurements
    assert m.status == status
    # A preliminary result is shown as such (V2.4); final ones read as before.
    assert ("(preliminary)" in m.evidence.summary) is (status == "preliminary")


def test_unknown_unit_is_unusable_and_reported() -> None:
    f = extract_facts([obs("u", "777-3", 150, "mg")])
    (m,) = f.measurements
    assert m.value is None and m.unusable is not None and "mg" in m.unusable
    assert f.latest("platelets") is None
    assert any("Observation/u" in p and "unknown unit" in p for p in f.problems)


def test_unit_text_used_when_code_missing() -> None:
    r = obs("w", "6690-2")
    r["valueQuantity"] = {"value": 13.2, "unit": "K/uL"}
    (m,) = extract_facts([r]).measurements
    assert m.value == 13.2


def test_bp_panel_components() -> None:
    r = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": cc(LNC, "85354-9"),
        "effectiveDateTime": "2026-11-19T10:00:00+02:00",
        "component": [
            {"code": cc(LNC, "8480-6"), "valueQuantity": {"value": 85, "code": "mm[Hg]"}},
            {"code": cc(LNC, "8462-4"), "valueQuantity": {"value": 50, "unit": "mmHg"}},
        ],
    }
    f = extract_facts([r])
    assert {(m.kind, m.value) for m in f.measurements} == {("systolic_bp", 85), ("diastolic_bp", 50)}
    assert all(m.time == datetime(2026, 11, 19, 8, tzinfo=UTC) for m in f.measurements)


def test_pain_score_value_integer_without_unit() -> None:
    r = obs("p", "72514-3")
    r["valueInteger"] = 7
    (m,) = extract_facts([r]).measurements
    assert (m.kind, m.value) == ("pain", 7.0)


@pytest.mark.parametrize(
    ("extra", "positive"),
    [
        ({"valueCodeableConcept": cc(SCT, "3092008", "Staphylococcus aureus")}, True),
        ({"valueCodeableConcept": {"text": "No growth at 5 days"}}, False),
        ({"valueString": "Negative"}, False),
        ({"interpretation": [{"coding": [{"code": "POS"}]}]}, True),
        ({"interpretation": [{"coding": [{"code": "A"}]}]}, True),
        ({"interpretation": [{"coding": [{"code": "NEG"}]}]}, False),
        ({}, None),
    ],
)
def test_blood_culture_positive(extra: dict[str, Any], positive: bool | None) -> None:
    (m,) = extract_facts([obs("bc", "600-7", **extra)]).measurements
    assert (m.kind, m.value, m.positive) == ("blood_culture", None, positive)


def test_symptom_observation_becomes_condition_fact() -> None:
    r = {
        "resourceType": "Observation",
        "id": "s",
        "status": "final",
        "code": cc(SCT, "267036007", "Dyspnea"),
        "effectiveDateTime": "2026-11-20",
    }
    neg = {**r, "id": "s2", "valueCodeableConcept": {"text": "Absent"}}
    text = {
        "resourceType": "Observation",
        "id": "s3",
        "status": "final",
        "code": {"text": "Symptom"},
        "valueString": "pleuritic chest pain since morning",
        "effectiveDateTime": "2026-11-20",
    }
    f = extract_facts([r, neg, text])
    assert [sorted(c.concepts) for c in f.conditions] == [["dyspnea"], ["chest-pain", "pleuritic-pain"]]
    assert f.conditions[0].active and f.conditions[0].onset == datetime(2026, 11, 20, tzinfo=UTC)


def test_neuro_exam_observation_and_procedure() -> None:
    o = {
        "resourceType": "Observation",
        "id": "n",
        "status": "final",
        "code": {"text": "Neuro check"},
        "valueString": "strength 5/5 bilateral",
        "effectiveDateTime": "2026-11-20T12:00:00Z",
    }
    p = {
        "resourceType": "Procedure",
        "id": "np",
        "status": "completed",
        "code": {"text": "Neurological examination"},
        "performedDateTime": "2026-11-20T13:00:00Z",
    }
    f = extract_facts([o, p])
    assert [(x.concepts, x.is_va) for x in f.procedures] == [(frozenset({"neuro-exam"}), False)] * 2


# ---------------------------------------------------------------- conditions
def test_condition_active_resolved_abated_refuted() -> None:
    f = extract_facts(
        [
            cond("a", cc(SCT, "13645005", "COPD")),
            cond(
                "b",
                cc(SCT, "302935008", "Infective discitis"),
                clinical="resolved",
                abatementDateTime="2020-01-01",
            ),
            cond("c", cc(SCT, "63627007", "Epidural abscess"), abatementDateTime="2026-11-10"),
            cond("d", cc(SCT, "91302008", "Sepsis"), verificationStatus={"coding": [{"code": "refuted"}]}),
            cond(
                "e",
                cc(SCT, "91302008", "Sepsis"),
                verificationStatus={"coding": [{"code": "entered-in-error"}]},
            ),
            cond("f", cc(SCT, "78275009", "OSA"), clinical="recurrence"),
        ]
    )
    got = {c.evidence.reference: (sorted(c.concepts), c.active) for c in f.conditions}
    assert got == {
        "Condition/a": (["copd"], True),
        "Condition/b": (["discitis"], False),
        "Condition/c": (["epidural-abscess"], False),
        "Condition/f": (["osa"], True),
    }
    b = next(c for c in f.conditions if c.evidence.reference == "Condition/b")
    assert b.abatement == datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "followup"), [("M80.08XA", False), ("M8008XD", True), ("M48.54XS", True), ("M48.56XG", True)]
)
def test_icd_fracture_seventh_character(code: str, followup: bool) -> None:
    (c,) = extract_facts([cond("v", cc(ICD, code))]).conditions
    assert "vertebral-fracture" in c.concepts
    assert c.followup_encounter is followup


def test_condition_text_fallback_and_negation() -> None:
    f = extract_facts(
        [
            cond("t", {"text": "T12 osteoporotic compression fracture"}),
            cond("n", {"text": "No history of cord compression"}),
            cond("r", {"text": "Retropulsion of posterior wall at L1"}),
        ]
    )
    assert [sorted(c.concepts) for c in f.conditions] == [
        ["osteoporosis", "vertebral-fracture"],
        ["retropulsion"],
    ]


def test_unrelated_conditions_make_no_facts() -> None:
    f = extract_facts([cond("u", cc(SCT, "367498001", "Seasonal allergic rhinitis"))])
    assert f.conditions == []


def test_urinary_tract_infection_is_a_systemic_infection_by_text() -> None:
    # V2.5: a UTI is one of the systemic infections of pre.infection.active (code not listed: text fallback).
    f = extract_facts([cond("u", cc(SCT, "197927001", "Recurrent urinary tract infection"))])
    assert [c.concepts for c in f.conditions] == [frozenset({"systemic-infection"})]


# ---------------------------------------------------------------- allergies
def test_allergies_codes_text_and_notes() -> None:
    base = {"resourceType": "AllergyIntolerance", "clinicalStatus": {"coding": [{"code": "active"}]}}
    f = extract_facts(
        [
            {**base, "id": "1", "code": cc(SCT, "426722004", "Iodinated contrast media")},
            {**base, "id": "2", "code": {"text": "Methyl methacrylate (bone cement)"}},
            {
                **base,
                "id": "3",
                "code": {"text": "Other"},
                "note": [{"text": "rash after PMMA vertebroplasty 2019"}],
            },
            {**base, "id": "4", "code": {"text": "Shellfish"}},
            {**base, "id": "5", "code": cc(RX, "1418", "Benzoyl Peroxide")},
            {**base, "id": "6", "code": {"text": "N,N-dimethyl-p-toluidine"}},
            {
                **base,
                "id": "7",
                "code": {"text": "Drug"},
                "reaction": [{"substance": cc(RX, "5956", "Iohexol")}],
            },
            {
                **base,
                "id": "8",
                "code": {"text": "Penicillin"},
                "note": [{"text": "No known allergy to contrast"}],
            },
            {
                **base,
                "id": "9",
                "code": cc(SCT, "426722004"),
                "verificationStatus": {"coding": [{"code": "refuted"}]},
            },
            {
                **base,
                "id": "10",
                "code": cc(SCT, "44588005", "Iodine"),
                "clinicalStatus": {"coding": [{"code": "resolved"}]},
            },
        ]
    )
    got = {a.evidence.reference.split("/")[1]: (sorted(a.concepts), a.active) for a in f.allergies}
    assert got == {
        "1": (["contrast-iodinated"], True),
        "2": (["bone-cement"], True),
        "3": (["bone-cement"], True),
        "4": (["contrast-class"], True),
        "5": (["benzoyl-peroxide"], True),
        "6": (["dmpt"], True),
        "7": (["contrast-iodinated"], True),
        "10": (["contrast-class"], False),
    }


# ---------------------------------------------------------------- procedures
def test_va_procedure_by_cpt_with_level_and_documentation() -> None:
    p = {
        "resourceType": "Procedure",
        "id": "va",
        "status": "completed",
        "code": cc(CPT, "22513", "Kyphoplasty thoracic"),
        "performedPeriod": {"start": "2026-11-18T09:00:00Z", "end": "2026-11-18T10:00:00Z"},
        "bodySite": [{"text": "T12 vertebral body"}],
        "encounter": {"reference": "Encounter/e1"},
        "note": [{"text": "Bipedicular approach. PMMA 4 mL, lot 1234. No complications."}],
    }
    (f,) = extract_facts([p]).procedures
    assert (f.is_va, f.level, f.region, f.encounter) == (True, "T12", "thoracic", "Encounter/e1")
    assert (f.has_level, f.has_approach, f.has_cement_details, f.has_complications) == (
        True,
        True,
        True,
        True,
    )
    assert f.end == datetime(2026, 11, 18, 10, tzinfo=UTC)
    assert f.evidence.summary == "Kyphoplasty thoracic at T12 on 2026-11-18 (completed)"


def test_va_procedure_missing_documentation() -> None:
    p = {
        "resourceType": "Procedure",
        "id": "va",
        "status": "completed",
        "code": {"text": "Vertebroplasty"},
        "performedDateTime": "2026-11-18",
    }
    (f,) = extract_facts([p]).procedures
    assert f.is_va and f.level is None and f.region is None
    assert (f.has_level, f.has_approach, f.has_cement_details, f.has_complications) == (
        False,
        False,
        False,
        False,
    )


def test_va_by_icd10pcs_region_and_text_level() -> None:
    p = {
        "resourceType": "Procedure",
        "id": "p",
        "status": "completed",
        "code": cc("http://www.cms.gov/Medicare/Coding/ICD10", "0QU03JZ"),
        "performedDateTime": "2026-01-02",
        "note": [{"text": "L2 augmentation"}],
    }
    (f,) = extract_facts([p]).procedures
    assert (f.is_va, f.level, f.region) == (True, "L2", "lumbar")


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_procedure_ignored_statuses(status: str) -> None:
    p = {"resourceType": "Procedure", "id": "p", "status": status, "code": cc(CPT, "22510")}
    assert extract_facts([p]).procedures == []


def test_bare_pvp_without_spine_context_is_not_va() -> None:
    p = {"resourceType": "Procedure", "id": "p", "status": "completed", "code": {"text": "PVP"}}
    assert extract_facts([p]).procedures == []


# ---------------------------------------------------------------- orders / appointments
def test_draft_va_service_request_and_record_orders() -> None:
    draft = {
        "resourceType": "ServiceRequest",
        "id": "d",
        "status": "draft",
        "intent": "order",
        "code": cc(CPT, "22514", "Kyphoplasty lumbar"),
        "occurrenceDateTime": "2026-12-01T08:00:00Z",
        "bodySite": [{"text": "L1"}],
    }
    inr = {
        "resourceType": "ServiceRequest",
        "id": "i",
        "status": "active",
        "intent": "order",
        "code": cc(LNC, "6301-6", "INR"),
        "occurrencePeriod": {"start": "2026-11-25"},
    }
    revoked = {**inr, "id": "x", "status": "revoked"}
    other = {
        "resourceType": "ServiceRequest",
        "id": "o",
        "status": "active",
        "code": cc(LNC, "0000-0", "Something"),
    }
    f = extract_facts([inr, revoked, other], draft_orders=[draft])
    (d,) = f.draft_orders
    assert (d.is_va, d.draft, d.level, d.region) == (True, True, "L1", "lumbar")
    assert d.planned == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert d.codes == frozenset({(CPT, "22514")})
    (o,) = f.orders
    assert (o.concepts, o.is_va, o.planned) == (frozenset({"inr"}), False, datetime(2026, 11, 25, tzinfo=UTC))


def test_same_id_in_record_and_drafts_is_kept_in_both() -> None:
    sr = {"resourceType": "ServiceRequest", "id": "s", "status": "active", "code": cc(CPT, "22510")}
    f = extract_facts([sr], draft_orders=[sr])
    assert len(f.orders) == 1 and len(f.draft_orders) == 1


@pytest.mark.parametrize(
    ("status", "kept"), [("booked", True), ("proposed", True), ("cancelled", False), ("noshow", False)]
)
def test_appointment(status: str, kept: bool) -> None:
    a = {
        "resourceType": "Appointment",
        "id": "a",
        "status": status,
        "start": "2026-12-03T07:30:00Z",
        "description": "Balloon kyphoplasty T11",
    }
    f = extract_facts([a])
    assert len(f.orders) == int(kept)
    if kept:
        (o,) = f.orders
        assert (o.resource_type, o.is_va, o.level, o.region) == ("Appointment", True, "T11", "thoracic")


# ---------------------------------------------------------------- imaging
def test_spine_mri_report_findings_and_levels() -> None:
    text = "Acute T12 compression fracture with STIR hyperintense marrow edema. Chronic L2 deformity."
    dr = {
        "resourceType": "DiagnosticReport",
        "id": "m",
        "status": "final",
        "code": cc(LNC, "24980-5", "MR Thoracic spine"),
        "effectiveDateTime": "2026-11-10",
        "conclusion": text,
    }
    (i,) = extract_facts([dr]).imaging
    assert (i.modality, i.region) == ("mri", "thoracic spine")
    assert i.findings == frozenset({"edema", "acute", "chronic"})
    assert i.levels == frozenset({"T12", "L2"})


def test_no_edema_and_presented_form_text() -> None:
    body = base64.b64encode(b"Healed old L1 fracture. No marrow edema on STIR.").decode()
    dr = {
        "resourceType": "DiagnosticReport",
        "id": "m",
        "status": "amended",
        "code": {"text": "MRI lumbar spine"},
        "issued": "2026-11-10T00:00:00Z",
        "presentedForm": [{"contentType": "text/plain", "data": body}],
    }
    (i,) = extract_facts([dr]).imaging
    assert i.modality == "mri" and i.region == "lumbar spine"
    assert i.findings == frozenset({"no-edema", "chronic"})


def test_preliminary_report_and_non_spine_imaging_ignored() -> None:
    pre = {"resourceType": "DiagnosticReport", "id": "p", "status": "preliminary", "code": cc(LNC, "24968-0")}
    chest = {
        "resourceType": "DiagnosticReport",
        "id": "c",
        "status": "final",
        "code": cc(LNC, "36643-5", "XR Chest 2 Views"),
    }
    assert extract_facts([pre, chest]).imaging == []


def test_guidance_report_is_va_evidence() -> None:
    dr = {
        "resourceType": "DiagnosticReport",
        "id": "g",
        "status": "final",
        "code": cc(LNC, "72553-1"),
        "effectiveDateTime": "2026-11-18",
    }
    (p,) = extract_facts([dr]).procedures
    assert p.is_va and p.region == "thoracic" and p.start == datetime(2026, 11, 18, tzinfo=UTC)


def test_imaging_study_ct_spine() -> None:
    s = {
        "resourceType": "ImagingStudy",
        "id": "s",
        "status": "available",
        "started": "2026-11-11T00:00:00Z",
        "series": [{"modality": {"code": "CT"}, "bodySite": {"display": "Lumbar spine"}}],
    }
    arm = {
        "resourceType": "ImagingStudy",
        "id": "a",
        "status": "available",
        "series": [{"modality": {"code": "DX"}, "bodySite": {"display": "Arm"}}],
    }
    (i,) = extract_facts([s, arm]).imaging
    assert (i.modality, i.region) == ("ct", "lumbar spine")


def test_imaging_helpers() -> None:
    assert imaging_findings("No acute fracture.") == frozenset()
    assert imaging_findings("without edema") == frozenset({"no-edema"})
    assert find_level("T2 hyperintense signal at L3") == "L3"  # T2 is a sequence, not a level
    assert find_level("T13 and L6 do not exist; S1 does") == "S1"


# ---------------------------------------------------------------- bundles, patient, encounters, dates
def test_bundles_unwrapped_nested_and_deduplicated() -> None:
    inr = obs("i", "6301-6", 1.1, "{INR}")
    inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inr}]}
    outer = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": inner}, {"resource": inr}, {"search": {}}],
    }
    f = extract_facts([outer, inr])
    assert len(f.measurements) == 1


def test_patient_and_encounter() -> None:
    f = extract_facts(
        [
            {"resourceType": "Patient", "id": "p", "birthDate": "1950-08-03", "gender": "female"},
            {
                "resourceType": "Encounter",
                "id": "e",
                "status": "in-progress",
                "period": {"start": "2026-11-19T08:00:00Z"},
            },
            {"resourceType": "Encounter", "id": "x", "status": "entered-in-error"},
        ]
    )
    assert f.patient is not None and f.patient.sex == "female"
    assert f.patient.birth_date == datetime(1950, 8, 3, tzinfo=UTC)
    assert [(e.id, e.status) for e in f.encounters] == [("e", "in-progress")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-19", datetime(2026, 11, 19, tzinfo=UTC)),
        ("2026-11-19T10:00:00+02:00", datetime(2026, 11, 19, 8, tzinfo=UTC)),
        ("2026-11-19T10:00:00Z", datetime(2026, 11, 19, 10, tzinfo=UTC)),
        ("2026-11-19T10:00:00.123Z", datetime(2026, 11, 19, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-19T10:00:00", datetime(2026, 11, 19, 10, tzinfo=UTC)),
    ],
)
def test_dates(value: str, expected: datetime) -> None:
    assert parse_fhir_datetime(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "19-11-2026", 20261119, "", None])
def test_bad_dates(value: Any) -> None:
    assert try_parse(value) is None


def test_bad_date_in_resource_is_a_problem_not_a_crash() -> None:
    f = extract_facts([obs("d", "6301-6", 1.0, "{INR}", when="last tuesday")])
    (m,) = f.measurements
    assert m.time is None
    assert any("Observation/d" in p and "unreadable" in p for p in f.problems)


def test_every_resource_with_the_same_bad_date_is_named() -> None:
    # Times are parsed once per distinct string; an unreadable one must still be reported for each resource.
    f = extract_facts([obs(n, "6301-6", 1.0, "{INR}", when="last tuesday") for n in ("d1", "d2")])
    assert [m.time for m in f.measurements] == [None, None]
    for ref in ("Observation/d1", "Observation/d2"):
        assert any(ref in p and "unreadable" in p for p in f.problems), f.problems


def test_shared_timestamps_give_each_fact_its_own_time() -> None:
    a = obs("a", "6301-6", 1.0, "{INR}", when="2026-11-19T10:00:00Z")
    b = obs("b", "6301-6", 1.2, "{INR}", when="2026-11-19T10:00:00Z")
    c = obs("c", "6301-6", 1.4, "{INR}", when="2026-11-20")
    f = extract_facts([a, b, c])
    assert [m.time for m in f.measurements] == [
        datetime(2026, 11, 19, 10, tzinfo=UTC),
        datetime(2026, 11, 19, 10, tzinfo=UTC),
        datetime(2026, 11, 20, tzinfo=UTC),
    ]


def test_problems_name_where_an_unusable_item_sits() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": obs("ok", "6301-6", 1.0, "{INR}")}, "not an entry", {"resource": {"id": "x"}}],
    }
    f = extract_facts([{"resourceType": "Patient", "id": "p"}, bundle, 42])
    assert "resources[1].entry[1]: not a JSON object" in f.problems
    assert "resources[2]: not a JSON object (int)" in f.problems
    assert len(f.measurements) == 1


def test_age_and_recent_are_not_acuity_words() -> None:
    assert imaging_findings("78 year old woman. Compared with recent CT.") == frozenset()
    assert imaging_findings("78-year-old woman with an old L1 fracture") == frozenset({"chronic"})


def test_negation_window_is_local() -> None:
    f = extract_facts(
        [
            cond(
                "a",
                {"text": "No prior surgery in the last ten years, has chronic obstructive pulmonary disease"},
            ),
            cond("b", {"text": "Patient denies chest pain, dyspnea"}),
        ]
    )
    assert [sorted(c.concepts) for c in f.conditions] == [["copd"]]


def test_a_lazily_composed_summary_is_the_same_evidence_as_a_written_one() -> None:
    from dataclasses import FrozenInstanceError

    from fhir_mappings.facts import Evidence

    calls: list[int] = []

    def compose() -> str:
        calls.append(1)
        return "INR 2.4 on 2026-11-19"

    lazy = Evidence("Observation/1", compose)
    assert calls == []  # nothing composed until read
    written = Evidence("Observation/1", "INR 2.4 on 2026-11-19")
    assert lazy == written and hash(lazy) == hash(written) and {lazy, written} == {written}
    assert lazy.summary == written.summary and repr(lazy) == repr(written)
    assert calls == [1]  # composed once, then kept
    assert lazy != Evidence("Observation/1", "INR 2.5 on 2026-11-19")
    with pytest.raises(FrozenInstanceError):
        lazy.reference = "Observation/2"  # type: ignore[misc]
    import copy
    import pickle

    assert copy.deepcopy(lazy) == pickle.loads(pickle.dumps(lazy)) == written


def test_a_converted_measurement_says_what_was_reported() -> None:
    # The evidence line is composed on first read (Evidence): it must still carry the value, the date and,
    # when the unit was converted, the value as the record gave it.
    f = extract_facts([obs("hb", "718-7", 120.0, "g/L", when="2026-11-19T08:00:00Z")])
    (m,) = f.measurements
    assert m.value == 12.0
    assert m.evidence.summary == "Hemoglobin 12 g/dL on 2026-11-19 (reported 120 g/L)"
