"""Coagulation (catalog V2.4, V2.5 as amended by V2.12, V2.10): antithrombotic card, out-of-range labs,
missing labs, coagulopathy, unidentified and stale medications, LMWH doses, the antithrombotic-order path."""

from __future__ import annotations

from datetime import timedelta

from fhir_mappings.facts import ClinicalFacts, PatientFact
from tests.pre.builders import (
    NOW,
    all_text,
    by_rule,
    carried,
    cond,
    ev,
    interruptive,
    meas,
    med,
    order,
    patient,
    priorities,
    ready_facts,
    rows,
    run,
    suggested_codes,
    va_order,
)

ACTIVE = "pre.coag.antithrombotic-active"
OUT = "pre.coag.labs-out-of-range"
MISSING = "pre.coag.labs-missing"
COAGULOPATHY = "pre.coag.coagulopathy"
WHILE = "pre.antithrombotic-order-while-va-planned"
CHECKLIST = "pre.checklist"


def _labs(
    inr: float | None, plt: float | None = 220, *, days: float = 1, lead_days: float = 7
) -> ClinicalFacts:
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=lead_days)))
    f.measurements = [m for m in f.measurements if m.kind not in ("inr", "platelets")]
    if inr is not None:
        f.measurements.append(meas("inr", inr, timedelta(days=days)))
    if plt is not None:
        f.measurements.append(meas("platelets", plt, timedelta(days=days)))
    return f


# ---- pre.coag.antithrombotic-active ----


def test_active_apixaban_card_names_drug_and_hold_with_normal_crcl() -> None:
    f = ready_facts()
    f.medications.append(med("apixaban", display="Eliquis 5 MG Oral Tablet"))
    f.measurements.append(meas("crcl", 70, timedelta(days=10)))
    card = by_rule(run(f))[ACTIVE]
    assert card.indicator == "warning" and "apixaban" in card.summary
    assert "hold 2 days before the VA, last dose on or before 26 Nov" in card.summary
    assert "hold apixaban 2 days: last dose on or before 26 Nov" in card.detail
    assert card.policy_used["antithrombotic_holds.apixaban"]["days"] == 2
    assert "SIR 2019 Part II" in card.citation and "ref [6" not in card.citation
    assert "Policy values used" not in card.detail and "cut-point" not in card.detail


def test_no_antithrombotic_no_card_inactive_flush_or_eye_drop_ignored() -> None:
    f = ready_facts()
    f.medications += [
        med("warfarin", active=False),
        med("heparin", display="Heparin lock flush 100 UNT/ML"),
        med("aspirin", "antiplatelet", display="aspirin eye drops", local=True),
    ]
    assert ACTIVE not in carried(run(f))


def test_missing_renal_data_uses_the_longer_hold_and_says_so() -> None:
    f = ready_facts()
    f.medications.append(med("dabigatran"))
    card = by_rule(run(f))[ACTIVE]
    assert card.policy_used["antithrombotic_holds.dabigatran"]["days"] == 4
    assert "Renal function used" in card.detail
    # creatinine/CrCl on a DOAC is a work-up row of the checklist
    assert "creatinine/CrCl" in by_rule(run(f))[CHECKLIST].detail


def test_egfr_only_is_not_a_creatinine_clearance() -> None:
    f = ready_facts()
    f.medications.append(med("apixaban"))
    f.measurements.append(meas("egfr", 85, timedelta(days=5)))
    card = by_rule(run(f))[ACTIVE]
    assert card.policy_used["antithrombotic_holds.apixaban"]["days"] == 3
    assert "eGFR" in card.detail


def test_cilostazol_alone_is_a_checklist_note_not_a_finding() -> None:
    f = ready_facts()
    f.medications.append(med("cilostazol", "antiplatelet"))
    cards = run(f)
    assert ACTIVE not in carried(cards)
    assert "cilostazol" in rows(f)["coagulation"].evidence and rows(f)["coagulation"].status != "met"


def test_two_antiplatelets_add_the_thrombotic_risk_line() -> None:
    f = ready_facts()
    f.medications += [med("aspirin", "antiplatelet"), med("clopidogrel", "antiplatelet")]
    assert "Thrombotic risk" in by_rule(run(f))[ACTIVE].detail
    g = ready_facts()
    g.medications.append(med("clopidogrel", "antiplatelet"))
    assert "Thrombotic risk" not in by_rule(run(g))[ACTIVE].detail


def test_stale_active_medication_still_counts_and_asks_to_confirm() -> None:
    f = ready_facts()
    f.medications.append(med("warfarin", authored=NOW.replace(year=2010, month=6, day=6)))
    card = by_rule(run(f))[ACTIVE]
    assert "Last ordered 6 Jun 2010 — confirm it is still taken" in card.detail
    fresh = ready_facts()
    fresh.medications.append(med("warfarin"))
    assert "confirm it is still taken" not in by_rule(run(fresh))[ACTIVE].detail


def test_prophylactic_enoxaparin_holds_12_hours_unreadable_dose_the_therapeutic_hold() -> None:
    f = ready_facts()
    f.medications.append(med("enoxaparin", daily_dose=40, dose_unit="mg"))
    assert by_rule(run(f))[ACTIVE].policy_used["antithrombotic_holds.enoxaparin"]["days"] == 0.5
    g = ready_facts()
    g.medications.append(med("enoxaparin", daily_dose=160, dose_unit="mg"))
    assert by_rule(run(g))[ACTIVE].policy_used["antithrombotic_holds.enoxaparin"]["days"] == 1
    h = ready_facts()
    h.medications.append(med("enoxaparin"))  # dose not readable
    assert by_rule(run(h))[ACTIVE].policy_used["antithrombotic_holds.enoxaparin"]["days"] == 1


def test_doac_inr_is_not_judged_and_the_card_says_why() -> None:
    f = _labs(2.4)
    f.medications.append(med("rivaroxaban"))
    cards = run(f)
    assert OUT not in carried(cards)
    assert "INR does not measure DOAC effect" in by_rule(cards)[ACTIVE].detail


# ---- pre.coag.labs-out-of-range ----


def test_why_warfarin_patient_a_week_ahead_gets_no_critical_reversal_card() -> None:
    f = _labs(2.6)
    f.medications.append(med("warfarin"))
    cards = run(f)
    assert not any(c.indicator == "critical" for c in cards)
    assert carried(cards)[OUT] == ACTIVE  # folded into the antithrombotic card
    text = all_text(by_rule(cards)[ACTIVE])
    assert "expected on warfarin; recheck within 2 days before the VA on 28 Nov" in text
    assert all("revers" not in all_text(c).lower() for c in cards)


def test_explained_inr_is_critical_when_imminent() -> None:
    f = _labs(2.6, lead_days=1)
    f.medications.append(med("warfarin"))
    card = by_rule(run(f))[OUT]
    assert card.indicator == "critical" and "VA tomorrow" in card.summary
    assert priorities(card) == {"stat"}


def test_supratherapeutic_inr_on_warfarin_is_a_warning_card() -> None:
    f = _labs(4.2)
    f.medications.append(med("warfarin"))
    card = by_rule(run(f))[OUT]
    assert card.indicator == "warning" and "supratherapeutic" in card.summary


def test_stale_warfarin_does_not_explain_a_raised_inr() -> None:
    f = _labs(2.6)
    f.medications.append(med("warfarin", authored=NOW - timedelta(days=900)))
    assert by_rule(run(f))[OUT].indicator == "warning"


def test_unexplained_inr_thresholds_are_strict_and_critical_only_when_imminent() -> None:
    assert OUT not in carried(run(_labs(1.5)))
    assert by_rule(run(_labs(1.6)))[OUT].indicator == "warning"
    assert by_rule(run(_labs(1.6, lead_days=1)))[OUT].indicator == "critical"
    assert by_rule(run(_labs(1.6, lead_days=1)))[OUT].summary.startswith("VA tomorrow")


def test_platelets_thresholds_are_strict() -> None:
    assert OUT not in carried(run(_labs(1.0, 50)))
    assert by_rule(run(_labs(1.0, 49)))[OUT].indicator == "warning"


def test_only_the_latest_readable_result_is_judged_and_unreadable_latest_counts_as_missing() -> None:
    f = _labs(None)
    f.measurements += [meas("inr", 3.0, timedelta(days=5)), meas("inr", 1.1, timedelta(days=1))]
    assert OUT not in carried(run(f))
    g = _labs(None)
    g.measurements += [
        meas("inr", 1.0, timedelta(days=5)),
        meas("inr", None, timedelta(days=1), unusable="unknown unit 'mg'"),
    ]
    cards = run(g)
    assert carried(cards)[MISSING] == CHECKLIST
    assert "could not be read" in by_rule(cards)[CHECKLIST].detail
    assert rows(g)["coagulation"].status != "met"


def test_liver_disease_uses_its_own_limits_and_folds_the_coagulopathy_finding() -> None:
    f = _labs(2.0, 40)
    f.conditions.append(cond("chronic-liver-disease", display="Cirrhosis of liver"))
    cards = run(f)
    assert OUT not in carried(cards)  # INR 2.0 < 2.5 and platelets 40 > 30
    assert by_rule(cards)[COAGULOPATHY].indicator == "warning"
    g = _labs(2.7, 40)
    g.conditions.append(cond("chronic-liver-disease", display="Cirrhosis of liver"))
    cards = run(g)
    assert carried(cards)[COAGULOPATHY] == OUT


def test_preliminary_result_is_shown_as_such() -> None:
    f = _labs(None)
    f.measurements.append(meas("inr", 1.9, timedelta(days=1), status="preliminary"))
    assert "(preliminary)" in by_rule(run(f))[OUT].summary


# ---- pre.coag.labs-missing ----


def test_missing_inr_and_platelets_fold_into_the_checklist_with_one_set_of_orders() -> None:
    cards = run(_labs(None, None))
    assert carried(cards)[MISSING] == CHECKLIST
    checklist = by_rule(cards)[CHECKLIST]
    assert checklist.indicator == "info"
    assert "2 to obtain before 28 Nov (INR, CBC)" in checklist.summary
    assert suggested_codes(checklist) == ["6301-6", "58410-2"]
    assert not interruptive(cards)


def test_current_labs_no_missing_finding_and_no_order() -> None:
    cards = run(_labs(1.0, 200))
    assert MISSING not in carried(cards)
    assert suggested_codes(by_rule(cards)[CHECKLIST]) == []


def test_failed_lab_source_is_unknown_not_missing() -> None:
    cards = run(_labs(None, None), unavailable=["coagLabs"])
    assert MISSING not in carried(cards)
    assert "sys.data-unavailable" in by_rule(cards)


def test_missing_orders_not_repeated_when_already_drafted_or_active() -> None:
    f = _labs(None, None)
    f.draft_orders.append(order("inr"))
    f.orders.append(order("cbc", draft=False, status="active"))
    assert suggested_codes(by_rule(run(f))[CHECKLIST]) == []


def test_warfarin_day_of_inr_is_scheduled_until_imminent_then_a_work_up_row() -> None:
    f = _labs(1.2, days=5)
    f.medications.append(med("warfarin"))
    checklist = by_rule(run(f))[CHECKLIST]
    assert "recheck INR within 2 days before the VA on 28 Nov" in checklist.detail
    assert checklist.indicator == "info"
    g = _labs(1.2, days=5, lead_days=1)
    g.medications.append(med("warfarin"))
    checklist = by_rule(run(g))[CHECKLIST]
    assert checklist.indicator == "warning"
    assert checklist.summary.startswith("VA tomorrow: INR on warfarin not done")
    assert priorities(checklist) == {"stat"}


# ---- pre.coag.coagulopathy ----


def test_why_von_willebrand_gives_a_coagulopathy_card_not_coagulation_plan_met() -> None:
    f = ready_facts()
    f.conditions.append(cond("bleeding-disorder", display="von Willebrand disorder"))
    cards = run(f)
    card = by_rule(cards)[COAGULOPATHY]
    assert card.indicator == "warning" and "von Willebrand" in card.summary
    row = rows(f)["coagulation"]
    assert row.status == "problem" and row.rule_id == COAGULOPATHY


def test_no_bleeding_disorder_coagulation_plan_met_by_judged_data_only() -> None:
    f = ready_facts()
    assert COAGULOPATHY not in carried(run(f))
    row = rows(f)["coagulation"]
    assert row.status == "met" and "INR 1" in row.evidence and "platelets 220" in row.evidence


def test_resolved_coagulopathy_does_not_fire() -> None:
    f = ready_facts()
    f.conditions.append(cond("coagulopathy", active=False))
    assert COAGULOPATHY not in carried(run(f))


# ---- unidentified medications (V2.4) ----


def test_why_unresolved_medication_reference_is_never_no_antithrombotic() -> None:
    f = ready_facts()
    f.unidentified_medications.append(ev("MedicationRequest", "medication not identified"))
    row = rows(f)["coagulation"]
    assert row.status != "met"
    assert "1 medication(s) could not be identified — review" in row.evidence
    g = ready_facts()
    assert rows(g)["coagulation"].status == "met"


# ---- pre.antithrombotic-order-while-va-planned ----


def _planned(days: float | None) -> ClinicalFacts:
    f = ClinicalFacts(patient=patient())
    f.orders.append(
        va_order(
            draft=False,
            resource_type="Appointment",
            planned=None if days is None else NOW + timedelta(days=days),
        )
    )
    return f


def test_why_planned_va_patient_on_warfarin_ordering_warfarin_gets_the_hold_card() -> None:
    f = _planned(3)
    f.medications.append(med("warfarin"))
    f.draft_medications.append(med("warfarin", draft=True))
    cards = run(f, "order-sign")
    assert [c.rule_id for c in cards] == [WHILE]
    card = cards[0]
    assert card.indicator == "warning" and "Warfarin ordered while a VA is planned on 24 Nov" in card.summary


def test_clopidogrel_with_va_booked_in_three_days_fires_on_order_select() -> None:
    f = _planned(3)
    f.draft_medications.append(med("clopidogrel", "antiplatelet", draft=True))
    assert [c.rule_id for c in run(f, "order-select")] == [WHILE]


def test_va_outside_the_hold_window_no_card() -> None:
    f = _planned(30)
    f.draft_medications.append(med("clopidogrel", "antiplatelet", draft=True))
    assert run(f, "order-sign") == []


def test_undated_planned_va_fires_and_a_failed_planned_source_is_named() -> None:
    f = _planned(None)
    f.draft_medications.append(med("apixaban", draft=True))
    assert "(date not set)" in run(f)[0].summary
    g = ClinicalFacts(patient=patient())
    g.draft_medications.append(med("apixaban", draft=True))
    cards = run(g, unavailable=["appointments"])
    assert [c.rule_id for c in cards] == ["sys.data-unavailable"]


def test_drafted_antithrombotic_is_not_active_medication() -> None:
    f = ready_facts()
    f.draft_medications.append(med("apixaban", draft=True))
    assert ACTIVE not in carried(run(f))


# ---- deceased (V2.4, V2.12) ----


def test_deceased_patient_one_identity_card_on_order_hooks_nothing_on_patient_view() -> None:
    f = ready_facts()
    f.patient = PatientFact(
        ev("Patient", "p"),
        NOW - timedelta(days=80 * 365),
        "female",
        True,
        NOW.replace(year=2002, month=3, day=2),
    )
    f.medications.append(med("warfarin"))
    cards = run(f, "order-sign")
    assert [(c.rule_id, c.indicator) for c in cards] == [("pre.patient-deceased", "info")]
    assert "died on 2 Mar 2002: check the patient's identity" in cards[0].summary
    f.orders.append(va_order(draft=False, planned=NOW + timedelta(days=3)))
    assert run(f, "patient-view") == []


def test_living_patient_no_deceased_card() -> None:
    assert "pre.patient-deceased" not in carried(run(ready_facts()))
