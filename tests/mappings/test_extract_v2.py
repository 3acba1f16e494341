"""Catalog v2 reads (V2.4, V2.10, V2.11, V2.12): each decision with a positive, a negative and a
missing-data case. Hand-built FHIR in, ClinicalFacts out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_mappings.extract import extract_facts
from fhir_mappings.facts import ClinicalFacts
from tests.mappings.test_extract import ICD, LNC, RX, SCT, UCUM, cc, cond, mr, obs

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WARFARIN = cc(RX, "855332", "warfarin sodium 5 MG Oral Tablet")
ENOXAPARIN = cc(RX, "854235", "enoxaparin sodium 100 MG/ML prefilled syringe")


def facts(*resources: dict[str, Any], pid: str | None = "p1", drafts: tuple[Any, ...] = ()) -> ClinicalFacts:
    return extract_facts(list(resources), list(drafts), patient_id=pid, now=NOW)


def about(resource: dict[str, Any], ref: str | None) -> dict[str, Any]:
    key = "patient" if resource["resourceType"] == "AllergyIntolerance" else "subject"
    return {**resource, key: {"reference": ref}} if ref is not None else resource


# ------------------------------------------------------------------------------ wrong patient (V2.4)
@pytest.mark.parametrize("ref", ["Patient/p2", "https://ehr.example.org/fhir/Patient/p2/_history/3"])
def test_other_patients_resources_are_ignored_and_counted(ref: str) -> None:
    f = facts(about(obs("i", "6301-6", 3.1, "{INR}"), ref), about(mr("m", WARFARIN), ref))
    assert f.measurements == [] and f.medications == []
    assert f.wrong_patient == 2


def test_the_context_patients_resources_count() -> None:
    f = facts(about(obs("i", "6301-6", 3.1, "{INR}"), "Patient/p1"), {"resourceType": "Patient", "id": "p1"})
    assert len(f.measurements) == 1 and f.patient is not None
    assert f.wrong_patient == 0


def test_another_patient_resource_is_not_the_patient() -> None:
    f = facts({"resourceType": "Patient", "id": "p2", "birthDate": "1940-01-01"})
    assert f.patient is None and f.wrong_patient == 1


def test_without_a_subject_or_a_context_patient_nothing_is_judged() -> None:
    assert len(facts(about(obs("i", "6301-6", 3.1, "{INR}"), None)).measurements) == 1  # no subject
    assert len(facts(about(obs("i", "6301-6", 3.1, "{INR}"), "Patient/p2"), pid=None).measurements) == 1
    # identifier-only and bundle-internal references that name no known Patient entry stay
    ident = {**obs("j", "6301-6", 3.1, "{INR}"), "subject": {"identifier": {"value": "123"}}}
    urn = about(obs("k", "6301-6", 3.1, "{INR}"), "urn:uuid:0f0e")
    assert len(facts(ident, urn).measurements) == 2


def test_urn_reference_to_another_patient_entry_is_ignored() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": "urn:uuid:aa", "resource": {"resourceType": "Patient", "id": "p2"}},
            {"fullUrl": "urn:uuid:bb", "resource": about(obs("i", "6301-6", 3.1, "{INR}"), "urn:uuid:aa")},
        ],
    }
    f = facts(bundle)
    assert f.measurements == [] and f.wrong_patient == 2  # the other Patient and its INR


# ------------------------------------------------------------------------------ future dates (V2.10)
def test_future_clinical_times_are_ignored_and_counted() -> None:
    tomorrow = (NOW + timedelta(days=1)).isoformat()
    f = facts(
        obs("i", "6301-6", 3.1, "{INR}", when=tomorrow),
        cond("c", cc(SCT, "71286001", "Spinal cord compression"), onsetDateTime=tomorrow),
        {
            "resourceType": "Procedure",
            "id": "va",
            "status": "completed",
            "code": cc("http://www.ama-assn.org/go/cpt", "22513"),
            "performedDateTime": tomorrow,
        },
    )
    assert (f.measurements, f.conditions, f.procedures) == ([], [], [])
    assert f.future_dated == 3


def test_past_and_slightly_skewed_times_count() -> None:
    f = facts(
        obs("i", "6301-6", 3.1, "{INR}", when=(NOW + timedelta(minutes=2)).isoformat()),  # EHR clock ahead
        obs("j", "6301-6", 1.1, "{INR}", when="2026-11-30"),
    )
    assert len(f.measurements) == 2 and f.future_dated == 0


def test_undated_resources_are_not_future() -> None:
    r = obs("i", "6301-6", 3.1, "{INR}")
    del r["effectiveDateTime"]
    f = facts(r)
    assert f.future_dated == 0 and [m.time for m in f.measurements] == [None]


def test_a_planned_order_in_the_future_is_not_a_data_error() -> None:
    sr = {
        "resourceType": "ServiceRequest",
        "id": "va",
        "status": "active",
        "intent": "order",
        "code": cc("http://www.ama-assn.org/go/cpt", "22513"),
        "occurrenceDateTime": (NOW + timedelta(days=7)).isoformat(),
    }
    f = facts(sr)
    assert len(f.orders) == 1 and f.future_dated == 0


# ------------------------------------------------------------------------------ numeric valueString (V2.11)
def test_numeric_value_string_is_readable() -> None:
    r = {**obs("i", "6301-6"), "valueString": " 2.8 "}
    (m,) = facts(r).measurements
    assert m.value == pytest.approx(2.8) and m.unusable is None


def test_non_numeric_value_string_is_unusable_and_says_why() -> None:
    (m,) = facts({**obs("i", "6301-6"), "valueString": "see note"}).measurements
    assert m.value is None and m.unusable is not None and "see note" in m.evidence.summary


def test_no_value_at_all_is_unusable() -> None:
    (m,) = facts({**obs("i", "6301-6"), "dataAbsentReason": {"text": "specimen clotted"}}).measurements
    assert m.value is None and "specimen clotted" in (m.unusable or "")


# ------------------------------------------------------------------------------ latest governs (V2.4)
def test_latest_any_returns_the_newest_even_when_unreadable() -> None:
    f = facts(
        obs("old", "6301-6", 1.1, "{INR}", when="2026-11-20"),
        {**obs("new", "6301-6", when="2026-11-27"), "valueString": "haemolysed"},
    )
    latest = f.latest_any("inr")
    assert latest is not None and latest.evidence.reference == "Observation/new" and latest.value is None
    usable = f.latest("inr")
    assert usable is not None and usable.evidence.reference == "Observation/old"


def test_latest_any_prefers_a_readable_result_of_the_same_time_and_honours_the_window() -> None:
    when = "2026-11-27T08:00:00Z"
    f = facts(
        {**obs("a", "6301-6", when=when), "valueString": "??"},
        obs("b", "6301-6", 1.2, "{INR}", when=when),
        obs("c", "6301-6", 1.3, "{INR}", when="2026-10-01"),
    )
    best = f.latest_any("inr")
    assert best is not None and best.evidence.reference == "Observation/b"
    older = f.latest_any("inr", until=datetime(2026, 11, 1, tzinfo=UTC))
    assert older is not None and older.evidence.reference == "Observation/c"


def test_latest_any_without_results_is_none() -> None:
    assert facts().latest_any("inr") is None
    undated = obs("u", "6301-6", 1.0, "{INR}")
    del undated["effectiveDateTime"]
    assert facts(undated).latest_any("inr") is None  # an undated result cannot be the latest


# ------------------------------------------------------------------------------ blood culture (V2.5)
@pytest.mark.parametrize(
    ("value", "positive"),
    [
        ("Staphylococcus aureus", True),
        ("Pending", None),
        ("In progress", None),
        ("No growth at 5 days", False),
    ],
)
def test_blood_culture_pending_is_never_positive(value: str, positive: bool | None) -> None:
    (m,) = facts({**obs("bc", "600-7"), "valueString": value}).measurements
    assert m.positive is positive


# ------------------------------------------------------------------------------ deceased (V2.4)
def test_deceased_by_boolean_or_date() -> None:
    p = facts({"resourceType": "Patient", "id": "p1", "deceasedBoolean": True}).patient
    assert p is not None and p.deceased and p.deceased_on is None
    p = facts({"resourceType": "Patient", "id": "p1", "deceasedDateTime": "2002-03-02"}).patient
    assert p is not None and p.deceased and p.deceased_on == datetime(2002, 3, 2, tzinfo=UTC)
    assert "died 2002-03-02" in p.evidence.summary


def test_alive_or_future_death_date_is_not_deceased() -> None:
    for extra in ({"deceasedBoolean": False}, {"deceasedDateTime": "2030-01-01"}, {}):
        p = facts({"resourceType": "Patient", "id": "p1", **extra}).patient
        assert p is not None and not p.deceased and p.deceased_on is None


# ------------------------------------------------------------------------------ dose forms (V2.10)
def test_local_dose_forms_are_never_antithrombotics() -> None:
    gel = mr("g", cc(RX, "1191", "aspirin", text="aspirin topical gel"))
    drops = {**mr("d", WARFARIN), "dosageInstruction": [{"route": {"text": "ophthalmic"}}]}
    f = facts(gel, drops)
    assert [m.dose_form_local for m in f.medications] == [True, True]
    assert f.active_medications(["anticoagulant", "antiplatelet"]) == []


def test_systemic_forms_count() -> None:
    tab = {**mr("t", WARFARIN), "dosageInstruction": [{"route": {"text": "oral"}}]}
    f = facts(tab)
    assert [m.ingredient for m in f.active_medications(["anticoagulant"])] == ["warfarin"]
    assert f.medications[0].dose_form_local is False


def test_transdermal_is_not_a_local_form() -> None:
    f = facts({**mr("t", WARFARIN), "dosageInstruction": [{"route": {"text": "transdermal"}}]})
    assert f.medications[0].dose_form_local is False


# ------------------------------------------------------------------------------ LMWH daily dose (V2.10)
def _dose(value: Any, unit: str, **timing: Any) -> dict[str, Any]:
    return {
        "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}],
        "timing": timing,
    }


@pytest.mark.parametrize(
    ("dosage", "expected"),
    [
        ([_dose(40, "mg", repeat={"frequency": 1, "period": 1, "periodUnit": "d"})], (40.0, "mg")),
        ([_dose(1, "mg", repeat={"frequency": 1, "period": 12, "periodUnit": "h"})], (2.0, "mg")),
        ([_dose(80, "mg", code={"coding": [{"code": "BID"}]})], (160.0, "mg")),
        ([_dose(5000, "[iU]", repeat={"frequency": 1, "period": 1, "periodUnit": "d"})], (5000.0, "[iU]")),
    ],
)
def test_daily_dose_is_read_from_the_dosage(dosage: list[Any], expected: tuple[float, str]) -> None:
    (m,) = facts({**mr("e", ENOXAPARIN), "dosageInstruction": dosage}).medications
    assert (m.daily_dose, m.dose_unit) == expected


@pytest.mark.parametrize(
    "dosage",
    [
        [_dose(1, "mg/kg", repeat={"frequency": 2, "period": 1, "periodUnit": "d"})],  # weight-based
        [_dose(40, "mg")],  # no frequency
        [{"text": "40 mg once daily"}],  # free text only
        [
            {
                **_dose(40, "mg", repeat={"frequency": 1, "period": 1, "periodUnit": "d"}),
                "asNeededBoolean": True,
            }
        ],
    ],
)
def test_unreadable_dose_is_none(dosage: list[Any]) -> None:
    (m,) = facts({**mr("e", ENOXAPARIN), "dosageInstruction": dosage}).medications
    assert (m.daily_dose, m.dose_unit) == (None, None)


def test_no_dosage_is_no_dose() -> None:
    (m,) = facts(mr("e", ENOXAPARIN)).medications
    assert m.daily_dose is None


# ------------------------------------------------------------------------------ intents and statuses (V2.10)
@pytest.mark.parametrize(
    "intent", ["order", "original-order", "reflex-order", "filler-order", "instance-order", "plan"]
)
def test_ordering_intents_are_active(intent: str) -> None:
    assert facts(mr("m", WARFARIN, intent=intent)).medications[0].active


def test_a_proposal_is_not_active() -> None:
    assert not facts(mr("m", WARFARIN, intent="proposal")).medications[0].active


def test_statement_on_hold_is_not_active_but_active_is() -> None:
    ms = {"resourceType": "MedicationStatement", "id": "s", "medicationCodeableConcept": WARFARIN}
    held = facts({**ms, "status": "on-hold"}).medications[0]
    taking = facts({**ms, "status": "active"}).medications[0]
    assert (held.active, taking.active) == (False, True)
    assert taking.authored is None  # undated: kept, never guessed


# ------------------------------------------------------------------------------ unidentified meds (V2.4)
def test_unresolvable_reference_is_an_unidentified_medication() -> None:
    f = facts({**mr("m", {}), "medicationReference": {"reference": "Medication/zz"}})
    assert f.medications == []
    (u,) = f.unidentified_medications
    assert u.reference == "MedicationRequest/m" and "could not be identified" in u.summary


def test_a_resolved_or_named_reference_is_identified() -> None:
    med = {"resourceType": "Medication", "id": "w", "code": WARFARIN}
    ref = {**mr("m", {}), "medicationReference": {"reference": "Medication/w"}}
    named = {**mr("n", {}), "medicationReference": {"reference": "Medication/q", "display": "Coumadin 5 mg"}}
    f = facts(med, ref, named)
    assert f.unidentified_medications == []
    assert [m.ingredient for m in f.medications] == ["warfarin", "warfarin"]


def test_inactive_or_empty_medications_are_not_unidentified_but_an_empty_medication_is() -> None:
    stopped = {**mr("s", {}, status="stopped"), "medicationReference": {"reference": "Medication/zz"}}
    assert facts(stopped).unidentified_medications == []
    empty = {"resourceType": "Medication", "id": "e"}
    f = facts(empty, {**mr("m", {}), "medicationReference": {"reference": "Medication/e"}})
    assert len(f.unidentified_medications) == 1


# ------------------------------------------------------------------------------ recorded / chronic (V2.12)
def test_recorded_date_is_kept_apart_from_onset() -> None:
    (c,) = facts(
        cond("c", cc(SCT, "71286001", "Spinal cord compression"), recordedDate="2026-11-25")
    ).conditions
    assert c.onset == datetime(2026, 11, 1, tzinfo=UTC)
    assert c.recorded == datetime(2026, 11, 25, tzinfo=UTC)


def test_no_onset_uses_recorded_and_no_dates_stay_none() -> None:
    base = cond("c", cc(SCT, "71286001", "Spinal cord compression"))
    del base["onsetDateTime"]
    (undated,) = facts(base).conditions
    assert (undated.onset, undated.recorded) == (None, None)
    (rec,) = facts({**base, "recordedDate": "2009-05-01"}).conditions
    assert rec.onset == rec.recorded == datetime(2009, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "concept",
    [
        cc(text="Chronic paraplegia"),
        cc(text="Long-standing paraplegia since 2009"),
        cc(text="Paraplegia, old"),
        cc(ICD, "S24.109S", "Unspecified injury at unspecified level of thoracic spinal cord, sequela"),
        cc(text="Late effect of spinal cord injury with paraplegia"),
    ],
)
def test_chronic_or_sequela_conditions_are_flagged(concept: dict[str, Any]) -> None:
    (c,) = facts(cond("c", {**concept, "text": concept.get("text", "") or "paraplegia sequela"})).conditions
    assert c.chronic


def test_new_or_negated_chronic_is_not_chronic() -> None:
    for text in ("Paraplegia", "Acute paraplegia", "Paraplegia, not chronic"):
        (c,) = facts(cond("c", cc(text=text))).conditions
        assert not c.chronic, text


def test_hemiplegia_and_stroke_sequelae_are_not_spinal_deficits() -> None:
    f = facts(
        cond("h", cc(SCT, "442733008", "Hemiplegia as late effect of cerebrovascular accident")),
        cond("s", cc(text="Paralytic syndrome as late effect of stroke")),
        cond("v", cc(text="Vocal cord paralysis")),
        cond("p", cc(SCT, "60389000", "Paraplegia")),
    )
    spinal = {c.evidence.reference for c in f.conditions_with(["new-motor-deficit"])}
    assert spinal == {"Condition/p"}


# ------------------------------------------------------------------------------ orders and encounters
def test_order_priority_and_timing_event() -> None:
    sr = {
        "resourceType": "ServiceRequest",
        "id": "va",
        "status": "draft",
        "intent": "order",
        "priority": "URGENT",
        "code": cc("http://www.ama-assn.org/go/cpt", "22513"),
        "occurrenceTiming": {"event": ["2026-12-03T08:00:00Z"]},
    }
    (o,) = facts(drafts=(sr,)).draft_orders
    assert o.priority == "urgent" and o.planned == datetime(2026, 12, 3, 8, tzinfo=UTC)
    (plain,) = facts(
        drafts=({k: v for k, v in sr.items() if k not in ("priority", "occurrenceTiming")},)
    ).draft_orders
    assert plain.priority is None and plain.planned is None


@pytest.mark.parametrize(
    ("klass", "expected"),
    [
        ({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "imp"}, "IMP"),
        ([{"coding": [{"code": "EMER"}]}], "EMER"),  # R5 senders: a list of CodeableConcepts
        (None, None),
        ("junk", None),
    ],
)
def test_encounter_class(klass: Any, expected: str | None) -> None:
    enc: dict[str, Any] = {"resourceType": "Encounter", "id": "e1", "status": "in-progress"}
    if klass is not None:
        enc["class"] = klass
    (e,) = facts(enc).encounters
    assert e.class_code == expected


# ------------------------------------------------------------------------------ posterior wall in imaging
def test_imaging_conclusion_documents_the_posterior_wall() -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "r",
        "status": "final",
        "code": cc(LNC, "24968-0", "MR Lumbar spine"),
        "effectiveDateTime": "2026-11-20",
        "conclusion": "Acute L1 fracture with 4 mm retropulsion narrowing the canal.",
    }
    (i,) = facts(report).imaging
    assert "posterior-wall" in i.findings
    (clean,) = facts({**report, "conclusion": "Acute L1 fracture. No retropulsion."}).imaging
    assert "posterior-wall" not in clean.findings
    (bare,) = facts({k: v for k, v in report.items() if k != "conclusion"}).imaging
    assert bare.findings == frozenset()
