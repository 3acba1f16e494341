"""va-postprocedure behaviour beyond single findings: scope, several VAs, levels, pain nadir, bone health,
follow-up, suggestions (no duplicates), escaping and the service definition."""

from __future__ import annotations

import re
from datetime import timedelta

from hooks import postprocedure
from hooks.postprocedure import rules as post
from tests.post.factories import (
    NOW,
    POLICY,
    VA_T,
    card,
    cement_allergy,
    cond,
    ids,
    make_facts,
    meas,
    med,
    order,
    proc,
    run_post,
    suggested_codes,
    va,
)

DAY = timedelta(days=1)


# ---- scope -----------------------------------------------------------------------------------------


def test_no_va_gives_no_cards_even_with_alarming_findings() -> None:
    facts = make_facts(
        conditions=[cond("pneumothorax", NOW - DAY)],
        measurements=[meas("spo2", 80, NOW - DAY)],
        medications=[],
    )
    assert run_post(facts) == []


def test_va_outside_the_look_back_gives_no_cards() -> None:
    old = NOW - timedelta(days=POLICY.value("post_lookback_days"), minutes=1)
    assert run_post(make_facts(procedures=[va(old)], medications=[])) == []
    inside = NOW - timedelta(days=POLICY.value("post_lookback_days"))
    assert post.BONE_HEALTH in ids(run_post(make_facts(procedures=[va(inside)], medications=[])))


def test_only_completed_or_in_progress_vas_count() -> None:
    for status in ("not-done", "entered-in-error", "preparation"):
        assert run_post(make_facts(procedures=[va(status=status)], medications=[])) == []
    assert ids(run_post(make_facts(procedures=[va(status="in-progress")]))) == {post.FOLLOWUP}


def test_a_future_dated_va_is_not_in_scope() -> None:
    assert run_post(make_facts(procedures=[va(NOW + DAY)], medications=[])) == []


def test_failed_procedures_source_returns_only_data_unavailable() -> None:
    facts = make_facts(conditions=[cond("pneumothorax", NOW - DAY)], medications=[])
    cards = run_post(facts, unavailable=["procedures", "labs"])
    assert ids(cards) == {"sys.data-unavailable"}
    assert "not an all-clear" in cards[0].detail


def test_other_failed_source_keeps_the_other_cards() -> None:
    facts = make_facts(procedures=[va()], conditions=[cond("pneumothorax", VA_T + timedelta(hours=3))])
    cards = run_post(facts, unavailable=["labs"])
    assert ids(cards) == {post.PLEURAL, post.HEMORRHAGE, "sys.data-unavailable"} - {post.HEMORRHAGE}


def test_patient_view_hook_behaves_like_encounter_start() -> None:
    facts = make_facts(procedures=[va()], measurements=[meas("spo2", 87, VA_T + timedelta(hours=5))])
    assert post.PCE in ids(run_post(facts, hook="patient-view"))


# ---- several VAs: the most recent VA before the finding anchors it ----------------------------------


def test_several_vas_the_most_recent_before_the_finding_anchors_it() -> None:
    lumbar = va(NOW - timedelta(days=60), level="L2", region="lumbar")
    thoracic = va(NOW - timedelta(days=5), level="T8", region="thoracic")
    # Pneumothorax 2 days after the lumbar VA: anchored to the lumbar one → pleural never fires.
    early = make_facts(
        procedures=[lumbar, thoracic], conditions=[cond("pneumothorax", NOW - timedelta(days=58))]
    )
    assert post.PLEURAL not in ids(run_post(early))
    # Pneumothorax after the thoracic VA → fires and names that VA as the anchor.
    late = make_facts(
        procedures=[lumbar, thoracic], conditions=[cond("pneumothorax", NOW - timedelta(days=4))]
    )
    spec = card(run_post(late), post.PLEURAL)
    assert "T8" in spec.detail and thoracic.evidence in spec.evidence


def test_finding_inside_an_earlier_vas_window_still_counts() -> None:
    first = va(NOW - timedelta(days=60))
    second = va(NOW - timedelta(days=5))
    # Fever 20 days after the first VA (infection window 90 d) — before the second VA, still a complication.
    facts = make_facts(
        procedures=[first, second], measurements=[meas("temperature", 38.6, NOW - timedelta(days=40))]
    )
    spec = card(run_post(facts), post.INFECTION)
    assert first.evidence in spec.evidence and second.evidence not in spec.evidence


def test_hemoglobin_baseline_is_the_last_value_before_the_anchoring_va() -> None:
    first = va(NOW - timedelta(days=60))
    second = va(NOW - timedelta(days=5))
    hb = [
        meas("hemoglobin", 13.0, NOW - timedelta(days=70)),  # before the first VA
        meas("hemoglobin", 12.0, NOW - timedelta(days=6)),  # last value before the second VA
        meas("hemoglobin", 10.5, NOW - timedelta(days=4)),  # drop 1.5 vs 12.0 (2.5 vs the older 13.0)
    ]
    assert post.HEMORRHAGE not in ids(run_post(make_facts(procedures=[first, second], measurements=hb)))
    hb.append(meas("hemoglobin", 9.9, NOW - timedelta(days=3)))  # drop 2.1 vs 12.0
    spec = card(run_post(make_facts(procedures=[first, second], measurements=hb)), post.HEMORRHAGE)
    assert "down 2.1 from 12 before the VA" in spec.detail


def test_hemoglobin_drop_threshold_is_inclusive_and_needs_a_baseline() -> None:
    t = VA_T + timedelta(hours=6)
    at = [meas("hemoglobin", 12.0, VA_T - DAY), meas("hemoglobin", 10.0, t)]
    assert post.HEMORRHAGE in ids(run_post(make_facts(procedures=[va()], measurements=at)))
    below = [meas("hemoglobin", 12.0, VA_T - DAY), meas("hemoglobin", 10.1, t)]
    assert post.HEMORRHAGE not in ids(run_post(make_facts(procedures=[va()], measurements=below)))
    # Without a pre-VA baseline a low post-VA Hb is a warning (V2.12), never the critical bleeding card.
    no_baseline = [meas("hemoglobin", 7.0, t)]
    spec = card(run_post(make_facts(procedures=[va()], measurements=no_baseline)), post.HEMORRHAGE)
    assert spec.indicator == "warning" and "access site" in spec.summary


def test_date_only_condition_on_the_procedure_day_counts_as_after_the_va() -> None:
    midnight = VA_T.replace(hour=0, minute=0)  # how a FHIR date without time arrives
    facts = make_facts(procedures=[va()], conditions=[cond("anaphylaxis", midnight)])
    assert post.HYPERSENSITIVITY in ids(run_post(facts))
    # A timed finding earlier the same day is before the VA: baseline.
    timed = make_facts(procedures=[va()], conditions=[cond("anaphylaxis", VA_T - timedelta(hours=2))])
    assert post.HYPERSENSITIVITY not in ids(run_post(timed))


# ---- thresholds -------------------------------------------------------------------------------------


def test_vital_sign_thresholds_are_strict() -> None:
    t = VA_T + timedelta(hours=2)
    at_limits = [meas("spo2", 94, t), meas("resp_rate", 24, t), meas("systolic_bp", 90, t)]
    cards = run_post(make_facts(procedures=[va()], measurements=at_limits))
    assert ids(cards) == {post.FOLLOWUP}
    lab_limits = [meas("wbc", 11, t), meas("crp", 10, t), meas("esr", 30, t), meas("temperature", 37.9, t)]
    assert ids(run_post(make_facts(procedures=[va()], measurements=lab_limits))) == {post.FOLLOWUP}
    fever = [meas("temperature", 38.0, t)]
    assert (
        card(run_post(make_facts(procedures=[va()], measurements=fever)), post.INFECTION).indicator
        == "critical"
    )


def test_tachycardia_without_dyspnea_is_not_pce() -> None:
    t = VA_T + timedelta(hours=2)
    assert post.PCE not in ids(
        run_post(make_facts(procedures=[va()], measurements=[meas("heart_rate", 130, t)]))
    )


def test_infection_suggestions_blood_cultures_only_when_febrile() -> None:
    t = VA_T + timedelta(hours=20)
    febrile = card(
        run_post(make_facts(procedures=[va()], measurements=[meas("temperature", 38.5, t)])), post.INFECTION
    )
    labs_only = card(
        run_post(make_facts(procedures=[va()], measurements=[meas("crp", 60, t)])), post.INFECTION
    )
    assert "Bacteria identified in Blood by Culture" in suggested_codes(febrile)
    assert "Bacteria identified in Blood by Culture" not in suggested_codes(labs_only)
    assert labs_only.indicator == "warning"
    for spec in (febrile, labs_only):
        assert "MR Spine WO and W contrast IV" in suggested_codes(spec)
    # Aspiration before antibiotics and the ID referral belong to a suspected infection, not to labs alone.
    assert "Referral to infectious diseases physician" in suggested_codes(febrile)
    assert any("aspiration" in code.lower() for code in suggested_codes(febrile))
    assert not any("aspiration" in code.lower() for code in suggested_codes(labs_only))


def test_positive_blood_culture_after_the_va_is_critical() -> None:
    m = meas("blood_culture", None, VA_T + timedelta(hours=20), positive=True)
    assert (
        card(run_post(make_facts(procedures=[va()], measurements=[m])), post.INFECTION).indicator
        == "critical"
    )


def test_resolved_acute_condition_is_history_but_a_resolved_fracture_still_counts() -> None:
    t = VA_T + timedelta(hours=5)
    resolved = make_facts(procedures=[va()], conditions=[cond("pneumothorax", t, active=False)])
    assert post.PLEURAL not in ids(run_post(resolved))
    fracture = make_facts(procedures=[va()], conditions=[cond("vertebral-fracture", t, active=False)])
    assert post.FRACTURE in ids(run_post(fracture))


# ---- pleural level ----------------------------------------------------------------------------------


def test_pleural_rule_needs_a_thoracic_or_unknown_level() -> None:
    t = VA_T + timedelta(hours=3)
    for level, region, fires in (
        ("T4", "thoracic", True),
        (None, None, True),  # unknown level → fire, for safety
        ("T11", None, True),
        ("L1", "lumbar", False),
        ("L3", None, False),
        ("S1", "sacral", False),
        ("C7", "cervical", False),
    ):
        facts = make_facts(procedures=[va(level=level, region=region)], conditions=[cond("pneumothorax", t)])
        assert (post.PLEURAL in ids(run_post(facts))) is fires, (level, region)


def test_pleural_symptoms_need_desaturation() -> None:
    t = VA_T + timedelta(hours=3)
    facts = make_facts(procedures=[va()], conditions=[cond("dyspnea", t)], measurements=[meas("spo2", 95, t)])
    assert post.PLEURAL not in ids(run_post(facts))
    assert post.PCE in ids(run_post(facts))  # new dyspnea alone is a PCE trigger


# ---- pain: latest post-VA score vs the post-VA nadir before it --------------------------------------


def _pain(*points: tuple[float, float]) -> list:  # (days after the VA, score)
    return [meas("pain", score, VA_T + timedelta(days=d)) for d, score in points]


def test_pain_rise_from_the_nadir_fires() -> None:
    facts = make_facts(procedures=[va()], measurements=_pain((-1, 8), (1, 3), (5, 4), (9, 5)))
    assert post.PAIN in ids(run_post(facts, now=VA_T + timedelta(days=10)))


def test_pain_rise_below_the_threshold_or_against_a_pre_va_score_does_not_fire() -> None:
    small = make_facts(procedures=[va()], measurements=_pain((1, 3), (5, 4)))
    assert post.PAIN not in ids(run_post(small, now=VA_T + timedelta(days=10)))
    # The pre-procedure score is baseline, not the nadir: 2 before the VA, 4 after → no rise counted.
    vs_pre = make_facts(procedures=[va()], measurements=_pain((-1, 2), (2, 4)))
    assert post.PAIN not in ids(run_post(vs_pre, now=VA_T + timedelta(days=10)))


def test_pain_uses_the_latest_score_not_an_earlier_peak() -> None:
    # Peak of 7 then back to 3: the latest score shows no rise over the nadir before it.
    facts = make_facts(procedures=[va()], measurements=_pain((1, 3), (3, 7), (6, 3)))
    assert post.PAIN not in ids(run_post(facts, now=VA_T + timedelta(days=10)))


def test_pain_card_suggests_mri_with_stir() -> None:
    facts = make_facts(procedures=[va()], measurements=_pain((1, 2), (20, 6)))
    spec = card(run_post(facts, now=VA_T + timedelta(days=21)), post.PAIN)
    assert suggested_codes(spec) == [
        "MR Spine",
        "CT Spine WO contrast",
        "CBC panel - Blood by Automated count",
        "C reactive protein [Mass/volume] in Serum or Plasma",
    ]
    mri = spec.suggestions[0].resources[0]
    assert "STIR" in mri["note"][0]["text"] and "T12" in mri["note"][0]["text"]
    assert "STIR" in spec.suggestions[0].label and "T12" in spec.suggestions[0].label
    assert "leak" in spec.suggestions[1].resources[0]["note"][0]["text"]


# ---- adjacent fracture ------------------------------------------------------------------------------


def test_followup_encounter_fracture_codes_are_not_new_fractures() -> None:
    t = VA_T + timedelta(days=30)
    old = make_facts(procedures=[va()], conditions=[cond("vertebral-fracture", t, followup=True)])
    assert post.FRACTURE not in ids(run_post(old))


# ---- hypersensitivity -------------------------------------------------------------------------------


def test_hypersensitivity_suggests_tryptase_referral_and_an_unconfirmed_allergy() -> None:
    onset = VA_T + timedelta(minutes=30)
    facts = make_facts(procedures=[va()], conditions=[cond("anaphylaxis", onset)])
    spec = card(run_post(facts, now=onset + timedelta(hours=1)), post.HYPERSENSITIVITY)
    assert suggested_codes(spec) == [
        "Tryptase [Mass/volume] in Serum or Plasma",
        "Referral to clinical allergist",
        "AllergyIntolerance",
    ]
    allergy = spec.suggestions[-1].resources[0]
    assert allergy["patient"] == {"reference": "Patient/pat1"}
    assert "undetermined" in allergy["code"]["text"].lower() and "bone cement" in allergy["code"]["text"]


def test_hypersensitivity_does_not_repeat_a_recorded_allergy_or_a_resulted_tryptase() -> None:
    t = VA_T + timedelta(minutes=30)
    facts = make_facts(
        procedures=[va()],
        conditions=[cond("anaphylaxis", t)],
        allergies=[cement_allergy()],
        measurements=[meas("tryptase", 25, t + timedelta(hours=1))],
    )
    spec = card(run_post(facts, now=t + timedelta(hours=2)), post.HYPERSENSITIVITY)
    assert suggested_codes(spec) == ["Referral to clinical allergist"]


# ---- suggestions: no duplicates ---------------------------------------------------------------------


def test_no_duplicate_suggestion_when_the_order_exists() -> None:
    t = VA_T + timedelta(hours=2)
    facts = make_facts(
        procedures=[va()],
        measurements=[meas("spo2", 86, t)],
        orders=[order("chest-xray")],
        draft_orders=[order("ecg", status="draft", draft=True)],
    )
    spec = card(run_post(facts), post.PCE)
    # An active chest X-ray order (any view) and a drafted ECG are not suggested again.
    assert suggested_codes(spec) == ["CTA Pulmonary arteries for pulmonary embolus W contrast IV"]
    # A completed earlier X-ray does not block a new one: the hypoxic patient's portable AP view.
    facts.orders = [order("chest-xray", status="completed")]
    facts.draft_orders = []
    assert "XR Chest AP" in suggested_codes(card(run_post(facts), post.PCE))


def test_neuro_and_hemorrhage_suggestions() -> None:
    t = VA_T + timedelta(hours=2)
    neuro = card(run_post(make_facts(procedures=[va()], conditions=[cond("cauda-equina", t)])), post.NEURO)
    assert suggested_codes(neuro) == ["MR Spine", "CT Spine WO contrast", "Referral to neurosurgeon"]
    hem = card(
        run_post(make_facts(procedures=[va()], measurements=[meas("systolic_bp", 80, t)])), post.HEMORRHAGE
    )
    assert suggested_codes(hem) == [
        "CTA Chest+Abdomen+Pelvis vessels W contrast IV",
        "CBC panel - Blood by Automated count",
        "Blood type and antibody screen",
        "Referral to radiologist",
        "Referral to vascular surgeon",
    ]


# ---- bone health --------------------------------------------------------------------------------------


def test_bone_health_fires_without_therapy_and_suggests_dxa_falls_endocrinology() -> None:
    spec = card(run_post(make_facts(procedures=[va()], medications=[])), post.BONE_HEALTH)
    assert spec.indicator == "warning"
    assert suggested_codes(spec) == [
        "DXA Skeletal system Views",
        "Referral to falls prevention clinic",
        "Referral to endocrinologist",
    ]
    assert post.FOLLOWUP not in ids(run_post(make_facts(procedures=[va()], medications=[])))


def test_bone_health_therapy_rules() -> None:
    def fires(*meds: object, drafts: tuple = ()) -> bool:
        facts = make_facts(procedures=[va()], medications=list(meds), draft_medications=list(drafts))
        return post.BONE_HEALTH in ids(run_post(facts))

    assert not fires(med("alendronate"))
    assert not fires(med("risedronate", resource_type="MedicationStatement"))
    assert fires(
        med("calcium carbonate", drug_class="supplement"), med("cholecalciferol", drug_class="supplement")
    )
    assert fires(med("alendronate", active=False, status="stopped", authored=NOW - timedelta(days=30)))
    month = timedelta(days=365.25 / 12)
    assert not fires(med("zoledronic acid", active=False, status="completed", authored=NOW - 11 * month))
    assert fires(med("zoledronic acid", active=False, status="completed", authored=NOW - 13 * month))
    assert not fires(med("denosumab", active=False, status="completed", authored=NOW - 5 * month))
    assert fires(med("denosumab", active=False, status="completed", authored=NOW - 7 * month))
    assert fires(med("denosumab", active=False, status="entered-in-error", authored=NOW - month))
    # Drafted in this request = planned.
    assert not fires(drafts=(med("alendronate", status="draft", draft=True, active=False),))


def test_bone_health_silent_when_medication_source_failed() -> None:
    cards = run_post(make_facts(procedures=[va()], medications=[]), unavailable=["medications"])
    assert post.BONE_HEALTH not in ids(cards)
    assert "post.bone-health.untreated" in card(cards, "sys.data-unavailable").detail


def test_bone_health_dxa_only_when_none_recent() -> None:
    recent = proc({"dxa"}, NOW - timedelta(days=300), display="DXA bone density scan")
    spec = card(run_post(make_facts(procedures=[va(), recent], medications=[])), post.BONE_HEALTH)
    assert "DXA Skeletal system Views" not in suggested_codes(spec)
    old = proc({"dxa"}, NOW - timedelta(days=3 * 365), display="DXA bone density scan")
    spec = card(run_post(make_facts(procedures=[va(), old], medications=[])), post.BONE_HEALTH)
    assert "DXA Skeletal system Views" in suggested_codes(spec)
    ordered = make_facts(procedures=[va()], medications=[], orders=[order("dxa")])
    assert "DXA Skeletal system Views" not in suggested_codes(card(run_post(ordered), post.BONE_HEALTH))


# ---- follow-up --------------------------------------------------------------------------------------


def test_followup_only_when_nothing_else_fires_and_within_its_window() -> None:
    window = POLICY.window_days(post.FOLLOWUP)
    spec = card(run_post(make_facts(procedures=[va(NOW - timedelta(days=window))])), post.FOLLOWUP)
    assert spec.indicator == "info" and "2–6 weeks" in spec.detail
    assert run_post(make_facts(procedures=[va(NOW - timedelta(days=window, minutes=1))])) == []


def test_followup_with_a_failed_source_says_it_is_not_an_all_clear() -> None:
    cards = run_post(make_facts(procedures=[va()]), unavailable=["vitals"])
    assert ids(cards) == {post.FOLLOWUP, "sys.data-unavailable"}
    assert "not an all-clear" in card(cards, post.FOLLOWUP).detail


# ---- text safety ------------------------------------------------------------------------------------


def test_record_text_is_escaped_in_card_markdown() -> None:
    nasty = "<script>alert(1)</script> **bold** [link](http://x)"
    facts = make_facts(procedures=[va()], conditions=[cond("myelopathy", VA_T + DAY, display=nasty)])
    detail = card(run_post(facts), post.NEURO).detail
    assert "<script>" not in detail and "**bold**" not in detail and "](http" not in detail


# ---- service definition -----------------------------------------------------------------------------


def test_service_definition_and_rule_docs() -> None:
    defs = postprocedure.services(POLICY)
    assert [(d.id, d.hook) for d in defs] == [
        ("va-postprocedure-encounter-start", "encounter-start"),
        ("va-postprocedure-patient-view", "patient-view"),
    ]
    svc = defs[0]
    assert {d.rule_id for d in svc.rules} == {*post.POST_RULE_IDS, "sys.check-failed"}
    for doc in svc.rules:
        assert doc.citation and doc.steps and doc.reads
    assert set(svc.checks_by_key) <= set(svc.prefetch)
    for template in svc.prefetch.values():
        tokens = re.findall(r"\{\{([^}]*)\}\}", template)
        # patient-view has no required encounterId: post templates use the patient only.
        assert tokens == ["context.patientId"], template
    assert svc.handler is not None
