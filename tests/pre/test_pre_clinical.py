"""Infection, indication (imaging concordance, neuro red flags), allergy, sedation and glycaemic rules:
for each a positive, a negative and a missing-data case."""

from __future__ import annotations

from datetime import timedelta

from tests.pre.builders import (
    NOW,
    allergy,
    by_rule,
    cond,
    meas,
    med,
    mri,
    order,
    ready_facts,
    rule_ids,
    run,
    suggested_codes,
    va_order,
)

DU = "sys.data-unavailable"

# ---- pre.infection.active ----


def test_fever_within_72h_is_critical_and_suggests_full_infection_workup() -> None:
    f = ready_facts()
    f.measurements.append(meas("temperature", 38.0, timedelta(hours=71)))  # = threshold counts (≥)
    card = by_rule(run(f))["pre.infection.active"]
    assert card.indicator == "critical" and "fever" in card.summary
    assert suggested_codes(card) == ["58410-2", "1988-5", "30341-2", "600-7"]


def test_fever_older_than_72h_or_below_threshold_does_not_fire() -> None:
    f = ready_facts()
    f.measurements += [
        meas("temperature", 39.0, timedelta(hours=73)),
        meas("temperature", 37.9, timedelta(hours=2)),
    ]
    assert "pre.infection.active" not in rule_ids(run(f))


def test_active_discitis_or_positive_culture_fire_resolved_does_not() -> None:
    f = ready_facts()
    f.conditions.append(cond("discitis", display="Infective discitis L1-L2"))
    assert "infection diagnosis" in by_rule(run(f))["pre.infection.active"].summary
    f = ready_facts()
    f.measurements.append(meas("blood_culture", None, timedelta(days=13), positive=True))
    assert "positive blood culture" in by_rule(run(f))["pre.infection.active"].summary
    f = ready_facts()
    f.measurements.append(meas("blood_culture", None, timedelta(days=2), positive=False))  # no growth
    f.conditions.append(cond("sepsis-bacteremia", active=False))
    assert "pre.infection.active" not in rule_ids(run(f))


def test_conditions_source_failed_infection_checks_named_as_not_run() -> None:
    cards = by_rule(run(ready_facts(), unavailable={"conditions"}))
    assert "pre.infection.active" not in cards
    assert "pre.infection.active" in cards[DU].detail and "pre.indication.neuro-red-flags" in cards[DU].detail


# ---- pre.infection.history ----


def test_resolved_spondylitis_warns_and_suggests_contrast_mri() -> None:
    f = ready_facts()
    f.conditions.append(cond("spondylitis", active=False, display="Spondylitis 2019"))
    card = by_rule(run(f))["pre.infection.history"]
    assert card.indicator == "warning" and suggested_codes(card) == ["36400-0"]


def test_no_history_no_card_and_active_infection_is_not_history() -> None:
    assert "pre.infection.history" not in rule_ids(run(ready_facts()))
    f = ready_facts()
    f.conditions.append(cond("vertebral-osteomyelitis"))
    assert "pre.infection.history" not in rule_ids(run(f))


def test_history_contrast_mri_not_suggested_twice() -> None:
    f = ready_facts()
    f.conditions.append(cond("discitis", active=False))
    f.draft_orders.append(order("mri-spine-contrast"))
    assert by_rule(run(f))["pre.infection.history"].suggestions == ()


# ---- pre.infection.screen-missing ----


def test_no_temperature_within_72h_fires() -> None:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind != "temperature"]
    f.measurements.append(meas("temperature", 36.5, timedelta(hours=80)))
    card = by_rule(run(f))["pre.infection.screen-missing"]
    assert "no temperature recorded within 72 h" in card.summary
    assert card.suggestions == ()  # WBC/CRP are present: nothing to order


def test_wbc_or_crp_alone_is_enough_neither_fires_with_orders() -> None:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind != "crp"]
    assert "pre.infection.screen-missing" not in rule_ids(run(f))
    f.measurements = [m for m in f.measurements if m.kind != "wbc"]
    card = by_rule(run(f))["pre.infection.screen-missing"]
    assert "neither a WBC nor a CRP within 30 days" in card.summary
    assert suggested_codes(card) == ["58410-2", "1988-5"]


def test_failed_sources_suppress_screen_missing_but_are_reported() -> None:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind not in ("temperature", "wbc", "crp")]
    cards = by_rule(run(f, unavailable={"temperature", "infectionLabs"}))
    assert "pre.infection.screen-missing" not in cards
    assert "pre.infection.screen-missing" in cards[DU].detail
    # only the lab source failed: the temperature part still speaks
    cards = by_rule(run(f, unavailable={"infectionLabs"}))
    assert "temperature" in cards["pre.infection.screen-missing"].summary
    assert "WBC" not in cards["pre.infection.screen-missing"].summary


# ---- pre.infection.risk-factors ----


def test_diabetes_or_immunosuppressant_is_an_info_risk_factor() -> None:
    f = ready_facts()
    f.conditions.append(cond("diabetes", display="Type 2 diabetes"))
    card = by_rule(run(f))["pre.infection.risk-factors"]
    assert card.indicator == "info" and "diabetes" in card.summary
    f = ready_facts()
    f.medications.append(med("methotrexate", "immunosuppressant"))
    assert "immunosuppression" in by_rule(run(f))["pre.infection.risk-factors"].summary


def test_no_risk_factor_no_card_resolved_diabetes_ignored() -> None:
    f = ready_facts()
    f.conditions.append(cond("diabetes", active=False))
    assert "pre.infection.risk-factors" not in rule_ids(run(f))


def test_risk_factor_check_named_when_conditions_fail() -> None:
    assert "pre.infection.risk-factors" in by_rule(run(ready_facts(), unavailable={"conditions"}))[DU].detail


# ---- pre.indication.concordance-missing / -discordant ----


def test_no_recent_spine_imaging_fires_and_suggests_stir_mri() -> None:
    f = ready_facts()
    f.imaging = [mri(ago=timedelta(weeks=13))]
    card = by_rule(run(f))["pre.indication.concordance-missing"]
    assert "12 weeks" in card.summary and suggested_codes(card) == ["36067-7"]
    assert card.policy_used == {"imaging_window_weeks": 12}


def test_recent_mri_or_ct_satisfies_imaging_presence() -> None:
    assert "pre.indication.concordance-missing" not in rule_ids(run(ready_facts()))
    f = ready_facts()
    f.imaging = [mri(ago=timedelta(weeks=11), modality="ct", findings=(), levels=())]
    assert "pre.indication.concordance-missing" not in rule_ids(run(f))


def test_imaging_source_failed_no_concordance_missing() -> None:
    f = ready_facts()
    f.imaging = []
    cards = by_rule(run(f, unavailable={"imaging"}))
    assert "pre.indication.concordance-missing" not in cards
    assert "pre.indication.concordance-missing" in cards[DU].detail


def test_mri_without_edema_or_chronic_or_other_level_is_discordant() -> None:
    for findings, levels, expected in (
        (("no-edema",), ("L1",), "no marrow oedema"),
        (("chronic",), ("L1",), "chronic/healed"),
        (("edema", "acute"), ("T8",), "ordered level L1 is not among the levels reported (T8)"),
    ):
        f = ready_facts()
        f.imaging = [mri(findings=findings, levels=levels)]
        card = by_rule(run(f))["pre.indication.concordance-discordant"]
        assert expected in card.summary + card.detail, findings


def test_acute_edema_at_ordered_level_is_concordant() -> None:
    f = ready_facts()
    f.imaging = [mri(findings=("edema", "acute", "chronic"), levels=("L1", "T8"))]  # old T8 + acute L1
    assert "pre.indication.concordance-discordant" not in rule_ids(run(f))


def test_discordance_not_judged_without_imaging() -> None:
    f = ready_facts()
    f.imaging = []
    ids = rule_ids(run(f))
    assert "pre.indication.concordance-discordant" not in ids  # the missing card speaks instead
    assert "pre.indication.concordance-missing" in ids


# ---- pre.indication.neuro-red-flags ----


def test_cord_compression_is_critical_with_spine_surgery_referral() -> None:
    f = ready_facts()
    f.conditions.append(cond("cord-compression", display="Spinal cord compression"))
    card = by_rule(run(f))["pre.indication.neuro-red-flags"]
    assert card.indicator == "critical" and "decompression" in card.summary
    assert suggested_codes(card) == ["308482002"]


def test_radiculopathy_or_resolved_flag_is_not_a_red_flag() -> None:
    f = ready_facts()
    f.conditions += [cond("radiculopathy"), cond("cauda-equina", active=False)]
    assert "pre.indication.neuro-red-flags" not in rule_ids(run(f))


def test_referral_not_repeated_when_active() -> None:
    f = ready_facts()
    f.conditions.append(cond("retropulsion"))
    f.orders.append(order("consult-spine-surgery", draft=False, status="active"))
    assert by_rule(run(f))["pre.indication.neuro-red-flags"].suggestions == ()


# ---- pre.allergy.contrast / pre.allergy.cement ----


def test_iodinated_contrast_allergy_warns_class_entry_asks_to_check() -> None:
    f = ready_facts()
    f.allergies.append(allergy("contrast-iodinated", "Iodinated contrast media"))
    assert "non-ionic" in by_rule(run(f))["pre.allergy.contrast"].summary
    f = ready_facts()
    f.allergies.append(allergy("contrast-class", "Contrast dye"))
    assert "check with the patient" in by_rule(run(f))["pre.allergy.contrast"].summary


def test_inactive_contrast_allergy_no_card_and_failed_source_reported() -> None:
    f = ready_facts()
    f.allergies.append(allergy("contrast-iodinated", active=False))
    assert "pre.allergy.contrast" not in rule_ids(run(f))
    cards = by_rule(run(ready_facts(), unavailable={"allergies"}))
    assert "pre.allergy.contrast" in cards[DU].detail and "pre.allergy.cement" in cards[DU].detail


def test_cement_component_allergy_is_critical_with_referrals() -> None:
    for concept in ("bone-cement", "benzoyl-peroxide", "dmpt"):
        f = ready_facts()
        f.allergies.append(allergy(concept, "Methyl methacrylate"))
        card = by_rule(run(f))["pre.allergy.cement"]
        assert card.indicator == "critical"
        assert suggested_codes(card) == ["306272008", "308472003", "308473008"]


def test_no_cement_allergy_no_card() -> None:
    f = ready_facts()
    f.allergies.append(allergy("contrast-iodinated"))
    assert "pre.allergy.cement" not in rule_ids(run(f))


def test_record_text_is_escaped_in_card_markdown() -> None:
    f = ready_facts()
    f.allergies.append(allergy("bone-cement", "<script>x</script> **PMMA** [link](http://evil)"))
    detail = by_rule(run(f))["pre.allergy.cement"].detail
    assert "<script>" not in detail and "**PMMA**" not in detail and "[link](" not in detail


# ---- pre.sedation.cardiopulmonary ----


def test_copd_osa_or_heart_failure_warns_about_sedation() -> None:
    for concept in ("copd", "osa", "heart-failure"):
        f = ready_facts()
        f.conditions.append(cond(concept))
        card = by_rule(run(f))["pre.sedation.cardiopulmonary"]
        assert card.indicator == "warning" and "prone" in card.summary


def test_no_cardiopulmonary_disease_no_sedation_card_and_failed_source_named() -> None:
    assert "pre.sedation.cardiopulmonary" not in rule_ids(run(ready_facts()))
    assert (
        "pre.sedation.cardiopulmonary" in by_rule(run(ready_facts(), unavailable={"conditions"}))[DU].detail
    )


# ---- pre.optimization.glycemic ----


def _diabetic(hba1c: float | None = None, glucose: float | None = None, ago: timedelta = timedelta(days=10)):  # type: ignore[no-untyped-def]
    f = ready_facts()
    f.conditions.append(cond("diabetes"))
    if hba1c is not None:
        f.measurements.append(meas("hba1c", hba1c, ago))
    if glucose is not None:
        f.measurements.append(meas("glucose", glucose, ago))
    return f


def test_hba1c_or_glucose_above_policy_fires_equal_does_not() -> None:
    assert "HbA1c 8.1" in by_rule(run(_diabetic(hba1c=8.1)))["pre.optimization.glycemic"].summary
    assert "glucose 201" in by_rule(run(_diabetic(glucose=201)))["pre.optimization.glycemic"].summary
    assert "pre.optimization.glycemic" not in rule_ids(run(_diabetic(hba1c=8.0, glucose=200)))


def test_high_values_without_diabetes_or_outside_90_days_do_not_fire() -> None:
    f = ready_facts()
    f.measurements.append(meas("hba1c", 9.5, timedelta(days=5)))
    assert "pre.optimization.glycemic" not in rule_ids(run(f))
    assert "pre.optimization.glycemic" not in rule_ids(run(_diabetic(hba1c=9.5, ago=timedelta(days=91))))


def test_glycemic_check_named_when_metabolic_labs_fail() -> None:
    cards = by_rule(run(_diabetic(), unavailable={"metabolicLabs"}))
    assert "pre.optimization.glycemic" not in cards
    assert "pre.optimization.glycemic" in cards[DU].detail


def test_planned_va_on_patient_view_runs_the_full_review() -> None:
    f = ready_facts()
    f.draft_orders = []
    f.orders.append(va_order(draft=False, planned=NOW + timedelta(days=10)))
    f.conditions.append(cond("copd"))
    assert rule_ids(run(f, "patient-view")) == {"pre.sedation.cardiopulmonary", "pre.checklist"}
