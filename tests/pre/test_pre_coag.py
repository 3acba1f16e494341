"""Coagulation rules: active antithrombotics with hold periods, INR/platelet limits, missing labs,
and an antithrombotic ordered while a VA is planned (incl. the issue's clopidogrel-in-3-days case)."""

from __future__ import annotations

from datetime import timedelta

from tests.pre.builders import (
    NOW,
    ClinicalFacts,
    by_rule,
    meas,
    med,
    order,
    patient,
    ready_facts,
    rule_ids,
    run,
    suggested_codes,
    va_order,
)

ACTIVE = "pre.coag.antithrombotic-active"
OUT = "pre.coag.labs-out-of-range"
MISSING = "pre.coag.labs-missing"
WHILE = "pre.antithrombotic-order-while-va-planned"


def _with_labs(inr: float | None, plt: float | None, ago: timedelta = timedelta(days=1)) -> ClinicalFacts:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind not in ("inr", "platelets")]
    if inr is not None:
        f.measurements.append(meas("inr", inr, ago))
    if plt is not None:
        f.measurements.append(meas("platelets", plt, ago))
    return f


# ---- pre.coag.antithrombotic-active ----


def test_active_apixaban_fires_with_hold_and_last_dose_time() -> None:
    f = ready_facts()
    f.medications.append(med("apixaban", display="Eliquis 5 MG Oral Tablet"))
    f.measurements.append(meas("crcl", 70, timedelta(days=10)))
    card = by_rule(run(f))[ACTIVE]
    assert card.indicator == "warning"
    assert "apixaban" in card.summary
    assert "2 days" in card.detail  # CrCl 70 ≥ 50 → normal-renal hold
    assert "last dose no later than 2026-11-26" in card.detail  # VA on 11-28 minus 2 days
    assert card.policy_used["antithrombotic_holds.apixaban"]["days"] == 2
    assert "SIR 2019 Part II" in card.citation and "ref [6" not in card.citation


def test_no_antithrombotic_no_card_and_inactive_or_flush_ignored() -> None:
    f = ready_facts()
    f.medications.append(med("warfarin", active=False))
    f.medications.append(med("heparin", display="Heparin lock flush 100 UNT/ML"))
    assert ACTIVE not in rule_ids(run(f))


def test_unknown_renal_function_uses_the_longer_hold() -> None:
    f = ready_facts()
    f.medications.append(med("dabigatran"))
    card = by_rule(run(f))[ACTIVE]
    assert card.policy_used["antithrombotic_holds.dabigatran"]["days"] == 4
    assert "renal function unknown" in card.detail


def test_egfr_only_says_so_and_uses_the_longer_hold() -> None:
    f = ready_facts()
    f.medications.append(med("apixaban"))
    f.measurements.append(meas("egfr", 85, timedelta(days=5)))
    card = by_rule(run(f))[ACTIVE]
    assert card.policy_used["antithrombotic_holds.apixaban"]["days"] == 3
    assert "only eGFR" in card.detail and "2 days would apply" in card.detail


def test_cockcroft_gault_from_creatinine_weight_age_sex_picks_the_row() -> None:
    f = ready_facts()
    f.patient = patient(age=80, sex="female")
    f.medications.append(med("dabigatran"))
    # (140-80)*50/(72*1.4)*0.85 = 25 mL/min < 50 → 4 days
    f.measurements += [meas("creatinine", 1.4, timedelta(days=3)), meas("weight", 50, timedelta(days=20))]
    card = by_rule(run(f))[ACTIVE]
    assert card.policy_used["antithrombotic_holds.dabigatran"]["days"] == 4
    assert "Cockcroft–Gault estimate 25 mL/min" in card.detail
    # a heavier, younger man clears well above 50 → the short hold
    f.patient = patient(age=60, sex="male")
    f.measurements = [m for m in f.measurements if m.kind != "weight"] + [
        meas("weight", 90, timedelta(days=2))
    ]
    card = by_rule(run(f))[ACTIVE]
    assert card.policy_used["antithrombotic_holds.dabigatran"]["days"] == 2


def test_antithrombotic_active_suggests_inr_and_cbc_only_when_missing() -> None:
    f = _with_labs(None, None)
    f.medications.append(med("warfarin"))
    assert suggested_codes(by_rule(run(f))[ACTIVE]) == ["6301-6", "58410-2"]
    f = _with_labs(1.2, 200)
    f.medications.append(med("warfarin"))
    assert by_rule(run(f))[ACTIVE].suggestions == ()


def test_medication_source_failed_no_antithrombotic_card_but_data_unavailable() -> None:
    cards = by_rule(run(ready_facts(), unavailable={"medicationRequests"}))
    assert ACTIVE not in cards
    assert "pre.coag.antithrombotic-active" in cards["sys.data-unavailable"].detail


# ---- pre.coag.labs-out-of-range: strict thresholds ----


def test_inr_equal_to_max_does_not_fire_just_above_does() -> None:
    assert OUT not in rule_ids(run(_with_labs(1.5, 200)))
    card = by_rule(run(_with_labs(1.51, 200)))[OUT]
    assert card.indicator == "critical" and "INR 1.51" in card.summary
    assert card.policy_used["inr_max"] == 1.5


def test_platelets_equal_to_min_does_not_fire_just_below_does() -> None:
    assert OUT not in rule_ids(run(_with_labs(1.0, 50)))
    card = by_rule(run(_with_labs(1.0, 49)))[OUT]
    assert "platelets 49" in card.summary
    assert "58410-2" in suggested_codes(card)  # repeat CBC


def test_only_latest_result_in_window_is_judged() -> None:
    f = _with_labs(1.1, 200)
    f.measurements.append(meas("inr", 3.2, timedelta(days=20)))  # older, superseded
    assert OUT not in rule_ids(run(f))
    f = _with_labs(None, 200)
    f.measurements.append(meas("inr", 3.2, timedelta(days=40)))  # outside the 30-day window
    cards = rule_ids(run(f))
    assert OUT not in cards and MISSING in cards


def test_labs_source_failed_no_out_of_range_or_missing_card() -> None:
    cards = by_rule(run(_with_labs(None, None), unavailable={"coagLabs"}))
    assert OUT not in cards and MISSING not in cards
    assert "pre.coag.labs-missing" in cards["sys.data-unavailable"].detail


# ---- pre.coag.labs-missing ----


def test_missing_inr_and_platelets_fire_with_both_orders() -> None:
    card = by_rule(run(_with_labs(None, None)))[MISSING]
    assert "no INR within 30 days" in card.summary and "no platelet count" in card.summary
    assert suggested_codes(card) == ["6301-6", "58410-2"]


def test_recent_labs_do_not_fire() -> None:
    assert MISSING not in rule_ids(run(_with_labs(1.0, 200, timedelta(days=29))))


def test_warfarin_inr_window_is_two_days_platelets_stay_thirty() -> None:
    f = _with_labs(1.2, 200, timedelta(days=2))  # exactly at the 2-day boundary: inside
    f.medications.append(med("warfarin"))
    assert MISSING not in rule_ids(run(f))
    f = _with_labs(1.2, 200, timedelta(days=2, minutes=1))
    f.medications.append(med("warfarin"))
    card = by_rule(run(f))[MISSING]
    assert "no INR within 2 days (patient on warfarin)" in card.summary
    assert "platelet" not in card.summary  # a 2-day-old platelet count is fine
    assert card.policy_used["inr_window_days"] == 2


def test_missing_orders_not_repeated_when_already_drafted_or_active() -> None:
    f = _with_labs(None, None)
    f.draft_orders.append(order("inr"))
    f.orders.append(order("cbc", draft=False, status="active"))
    card = by_rule(run(f))[MISSING]
    assert card.suggestions == ()  # still a finding, but no duplicate orders (no alert loop on re-sign)


# ---- pre.antithrombotic-order-while-va-planned ----


def _planned(days: float, **kw: object) -> ClinicalFacts:
    f = ClinicalFacts(patient=patient())
    f.orders.append(va_order(draft=False, planned=NOW + timedelta(days=days), **kw))  # type: ignore[arg-type]
    return f


def test_done_when_clopidogrel_ordered_with_va_booked_in_three_days() -> None:
    f = _planned(3, resource_type="Appointment")
    f.draft_medications.append(med("clopidogrel", "antiplatelet", draft=True, display="Plavix 75 MG"))
    cards = run(f, "order-sign")
    assert [c.rule_id for c in cards] == [WHILE]  # only this rule: no checklist on this path
    card = cards[0]
    assert card.indicator == "warning"
    assert "within its hold of 5 days" in card.summary
    assert "2026-11-24" in card.summary
    assert card.policy_used["antithrombotic_holds.clopidogrel"]["days"] == 5


def test_hold_window_boundary_is_inclusive() -> None:
    f = _planned(5)  # clopidogrel hold = 5 days: VA exactly at now + 120 h → fires
    f.draft_medications.append(med("clopidogrel", "antiplatelet", draft=True))
    assert rule_ids(run(f, "order-select")) == {WHILE}
    f = _planned(5 + 1 / 1440)  # one minute later → outside the hold window → nothing at all
    f.draft_medications.append(med("clopidogrel", "antiplatelet", draft=True))
    assert run(f, "order-select") == []


def test_renal_unknown_uses_long_hold_for_planned_va() -> None:
    f = _planned(3.5)  # apixaban: 2 days with good CrCl, 3 days when unknown
    f.draft_medications.append(med("apixaban", draft=True))
    assert run(f) == []  # 3.5 d > 3 d long hold
    f = _planned(2.5)
    f.draft_medications.append(med("apixaban", draft=True))
    assert rule_ids(run(f)) == {WHILE}  # inside the long hold (unknown renal) though outside the short one
    f.measurements.append(meas("crcl", 80, timedelta(days=5)))
    assert run(f) == []  # known normal CrCl → 2-day hold → 2.5 d is outside


def test_planned_va_without_date_fires() -> None:
    f = ClinicalFacts(orders=[va_order(draft=False, planned=None)])
    f.draft_medications.append(med("rivaroxaban", draft=True))
    card = by_rule(run(f))[WHILE]
    assert "date not set" in card.summary


def test_no_planned_va_no_cards_and_non_antithrombotic_draft_no_cards() -> None:
    f = ClinicalFacts(draft_medications=[med("clopidogrel", "antiplatelet", draft=True)])
    assert run(f) == []
    f = _planned(2)
    f.draft_medications.append(med("alendronate", "osteoporosis", draft=True))
    assert run(f) == []


def test_planned_sources_failed_while_ordering_antithrombotic_says_check_could_not_run() -> None:
    f = ClinicalFacts(draft_medications=[med("clopidogrel", "antiplatelet", draft=True)])
    cards = by_rule(run(f, unavailable={"appointments"}))
    assert set(cards) == {"sys.data-unavailable"}
    assert WHILE in cards["sys.data-unavailable"].detail


def test_drafted_antithrombotic_is_not_active_medication() -> None:
    # VA drafted together with a clopidogrel order: the order-while-planned rule, not antithrombotic-active.
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=3)))
    f.draft_medications.append(med("clopidogrel", "antiplatelet", draft=True))
    ids = rule_ids(run(f))
    assert WHILE in ids and ACTIVE not in ids
