"""Catalog v2 post-procedure decisions (V2.6 as amended by V2.11/V2.12): for each decision a positive, a
negative and a missing-data case, at the facts level with a fixed clock."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from hooks.postprocedure import rules as post
from tests.post.factories import (
    NOW,
    VA_T,
    card,
    cond,
    ids,
    make_facts,
    meas,
    med,
    run_discharge,
    run_post,
    suggested_codes,
    va,
)

H = timedelta(hours=1)
DAY = timedelta(days=1)
PORTABLE_AP = "XR Chest AP"  # LOINC 36572-6
TWO_VIEWS = "XR Chest 2 Views"


def post_cards(*, measurements: tuple = (), conditions: tuple = (), now=NOW, procedures=None, **kw):  # type: ignore[no-untyped-def]
    facts = make_facts(
        procedures=procedures if procedures is not None else [va()],
        measurements=list(measurements),
        conditions=list(conditions),
        **kw,
    )
    return run_post(facts, now=now)


def spo2(value: float, when=VA_T + 2 * H):  # type: ignore[no-untyped-def]
    return meas("spo2", value, when)


# ---- PCE: the latest SpO₂ against the patient's own baseline ----------------------------------------


def test_pce_spo2_below_90_is_critical_91_is_warning_94_is_nothing() -> None:
    assert card(post_cards(measurements=(spo2(88),)), post.PCE).indicator == "critical"
    # Issue: an asymptomatic patient at 91 % got a critical "assess now" card; v2 makes it a warning.
    assert card(post_cards(measurements=(spo2(91),)), post.PCE).indicator == "warning"
    assert post.PCE not in ids(post_cards(measurements=(spo2(94),)))
    # Missing: no SpO₂ at all is not a finding (no card), and a failed vitals source is reported.
    assert post.PCE not in ids(post_cards())
    failed = run_post(make_facts(procedures=[va()]), unavailable=["vitals"])
    assert post.PCE in card(failed, "sys.data-unavailable").detail


def test_pce_copd_baseline_uses_a_drop_of_4_instead_of_the_absolute_limit() -> None:
    baseline = spo2(90, VA_T - 5 * DAY)
    # Issue: a COPD patient whose usual SpO₂ is 90 % got a critical card for a month.
    assert post.PCE not in ids(post_cards(measurements=(baseline, spo2(89))))
    assert post.PCE not in ids(post_cards(measurements=(baseline, spo2(87))))  # drop 3
    spec = card(post_cards(measurements=(baseline, spo2(86))), post.PCE)  # drop 4
    assert spec.indicator == "critical" and "baseline 90 %" in spec.detail
    # Missing: a baseline older than 30 days is not the patient's baseline → the absolute limit applies.
    stale = spo2(90, VA_T - 40 * DAY)
    assert card(post_cards(measurements=(stale, spo2(89))), post.PCE).indicator == "critical"


def test_pce_drop_of_3_from_a_normal_baseline_is_a_warning() -> None:
    baseline = spo2(98, VA_T - DAY)
    assert card(post_cards(measurements=(baseline, spo2(95))), post.PCE).indicator == "warning"
    assert post.PCE not in ids(post_cards(measurements=(baseline, spo2(96))))
    assert post.PCE not in ids(post_cards(measurements=(spo2(95),)))  # no baseline: 95 is normal


def test_pce_the_latest_spo2_governs() -> None:
    early_low, late_normal = spo2(85, VA_T + H), spo2(97, VA_T + 5 * H)
    assert post.PCE not in ids(post_cards(measurements=(early_low, late_normal)))
    assert post.PCE in ids(post_cards(measurements=(late_normal, spo2(85, VA_T + 6 * H))))


def test_pce_symptoms_with_hypoxemia_tachypnoea_or_tachycardia_are_critical_alone_a_warning() -> None:
    t = VA_T + 3 * H
    dyspnea = cond("dyspnea", t)
    assert (
        card(post_cards(conditions=(dyspnea,), measurements=(spo2(93, t),)), post.PCE).indicator == "critical"
    )
    hr = meas("heart_rate", 112, t)
    assert card(post_cards(conditions=(dyspnea,), measurements=(hr,)), post.PCE).indicator == "critical"
    rr = meas("resp_rate", 28, t)
    assert card(post_cards(conditions=(dyspnea,), measurements=(rr,)), post.PCE).indicator == "critical"
    assert card(post_cards(conditions=(dyspnea,)), post.PCE).indicator == "warning"
    assert card(post_cards(measurements=(rr,)), post.PCE).indicator == "warning"  # RR > 24 alone
    assert post.PCE not in ids(post_cards(measurements=(hr,)))  # tachycardia alone
    assert card(post_cards(conditions=(cond("pulmonary-embolism", t),)), post.PCE).indicator == "critical"


def test_pce_hypoxic_patient_gets_the_portable_ap_film_stat_and_one_xray() -> None:
    spec = card(post_cards(measurements=(spo2(87),)), post.PCE)
    codes = suggested_codes(spec)
    assert PORTABLE_AP in codes and TWO_VIEWS not in codes
    assert {s.resources[0].get("priority") for s in spec.suggestions} == {"stat"}
    # Not hypoxic (new chest pain, SpO₂ 97 %): the ordinary 2-view film, routine priority.
    calm = card(
        post_cards(conditions=(cond("chest-pain", VA_T + 3 * H),), measurements=(spo2(97),)), post.PCE
    )
    assert TWO_VIEWS in suggested_codes(calm) and PORTABLE_AP not in suggested_codes(calm)
    assert all("priority" not in s.resources[0] for s in calm.suggestions)


def test_pce_massive_embolism_offers_ir_and_cardiothoracic_consults() -> None:
    massive = cond("pulmonary-embolism", VA_T + 3 * H, display="Massive intracardiac cement embolism")
    codes = suggested_codes(card(post_cards(conditions=(massive,)), post.PCE))
    assert "Referral to radiologist" in codes and "Referral to cardiothoracic surgeon" in codes
    plain = cond("pulmonary-embolism", VA_T + 3 * H, display="Pulmonary embolism")
    assert "Referral to cardiothoracic surgeon" not in suggested_codes(
        card(post_cards(conditions=(plain,)), post.PCE)
    )


# ---- pleural: folded when the evidence is the same ------------------------------------------------------


def test_thoracic_desaturation_gives_one_card_with_the_pleural_line_and_one_xray() -> None:
    t = VA_T + 3 * H
    cards = post_cards(conditions=(cond("pleuritic-pain", t),), measurements=(spo2(88, t),))
    assert ids(cards) & {post.PCE, post.PLEURAL} == {post.PCE}
    spec = card(cards, post.PCE)
    assert "pneumothorax or hemothorax — check Hb" in spec.detail
    all_codes = [c for s in cards for c in suggested_codes(s)]
    assert sum(code.startswith("XR Chest") for code in all_codes) == 1


def test_documented_pneumothorax_is_a_card_only_at_a_thoracic_or_unknown_level() -> None:
    t = VA_T + 3 * H
    assert card(post_cards(conditions=(cond("pneumothorax", t),)), post.PLEURAL).indicator == "critical"
    lumbar = [va(level="L3", region="lumbar")]
    assert post.PLEURAL not in ids(post_cards(conditions=(cond("pneumothorax", t),), procedures=lumbar))
    unknown = [va(level=None, region=None)]
    assert post.PLEURAL in ids(post_cards(conditions=(cond("pneumothorax", t),), procedures=unknown))
    assert post.PLEURAL not in ids(post_cards())  # missing: nothing documented, nothing said


# ---- neuro: by kind and by recent onset -----------------------------------------------------------------


def test_motor_deficit_recent_onset_is_critical_at_any_time_in_the_look_back() -> None:
    # Issue: new leg weakness on day 40 gave nothing (30-day window). Onset day 40, seen on day 41.
    onset = VA_T + 40 * DAY
    spec = card(post_cards(conditions=(cond("new-motor-deficit", onset),), now=onset + DAY), post.NEURO)
    assert spec.indicator == "critical"
    assert "retropulsion" in spec.detail and "epidural abscess" in spec.detail  # late causes after day 30
    mri = next(s for s in spec.suggestions if "STIR" in s.label)
    assert "STIR" in mri.resources[0]["note"][0]["text"] and "T12" in mri.resources[0]["note"][0]["text"]
    assert mri.resources[0]["priority"] == "stat"


def test_deficit_onset_after_the_va_but_older_than_14_days_is_a_warning() -> None:
    onset = VA_T + 10 * DAY
    spec = card(post_cards(conditions=(cond("cauda-equina", onset),), now=onset + 15 * DAY), post.NEURO)
    assert spec.indicator == "warning"
    assert all("priority" not in s.resources[0] for s in spec.suggestions)
    # A deficit documented before the VA is baseline.
    assert post.NEURO not in ids(post_cards(conditions=(cond("cauda-equina", VA_T - 3 * DAY),)))
    # Missing: an undated deficit cannot be placed after the VA → no card (never guessed) …
    assert post.NEURO not in ids(post_cards(conditions=(cond("cauda-equina", None),)))
    # … but without an onset the recordedDate places it (V2.12).
    recorded = dataclasses.replace(cond("cauda-equina", None), recorded=VA_T + 5 * H)
    assert card(post_cards(conditions=(recorded,)), post.NEURO).indicator == "critical"


def test_sciatica_alone_is_a_warning_with_ct_and_the_epidural_steroid_option() -> None:
    # Issue: "sciatica" alone gave a critical canal-leak card suggesting high-dose steroids.
    spec = card(
        post_cards(conditions=(cond("radiculopathy", VA_T + 12 * H, display="Sciatica"),)), post.NEURO
    )
    assert spec.indicator == "warning"
    assert "high-dose" not in spec.detail and "epidural steroid injection" in spec.detail
    assert suggested_codes(spec) == ["CT Spine WO contrast"]
    both = card(
        post_cards(conditions=(cond("radiculopathy", VA_T + 9 * H), cond("new-motor-deficit", VA_T + 9 * H))),
        post.NEURO,
    )
    assert both.indicator == "critical"  # a motor deficit with it is the emergency


# ---- hemorrhage: severity, baseline at most 30 days before the VA ---------------------------------------


def test_puncture_site_hematoma_is_a_warning_retroperitoneal_is_critical() -> None:
    t = VA_T + 5 * H
    # Issue: a day-1 puncture-site hematoma got a critical "treat as active bleeding" card with a CTA.
    site = card(
        post_cards(conditions=(cond("hemorrhage", t, display="Puncture site hematoma"),)), post.HEMORRHAGE
    )
    assert site.indicator == "warning" and "access site" in site.summary
    assert "CTA Chest+Abdomen+Pelvis vessels W contrast IV" not in suggested_codes(site)
    retro = card(post_cards(conditions=(cond("hemorrhage", t, display="Psoas hematoma"),)), post.HEMORRHAGE)
    assert retro.indicator == "critical"
    assert retro.suggestions[0].resources[0]["priority"] == "stat"


def test_hb_baseline_older_than_30_days_is_not_used() -> None:
    # Issue: a baseline 2.5 years old fired the critical card.
    old = meas("hemoglobin", 13.5, VA_T - 900 * DAY)
    now_hb = meas("hemoglobin", 11.0, VA_T + 6 * H)
    assert post.HEMORRHAGE not in ids(post_cards(measurements=(old, now_hb)))
    recent = meas("hemoglobin", 13.5, VA_T - 20 * DAY)
    assert card(post_cards(measurements=(recent, now_hb)), post.HEMORRHAGE).indicator == "critical"


def test_hb_without_baseline_warns_on_a_post_va_fall_or_a_low_value() -> None:
    first, second = meas("hemoglobin", 12.0, VA_T + 2 * H), meas("hemoglobin", 9.8, VA_T + 20 * H)
    assert card(post_cards(measurements=(first, second)), post.HEMORRHAGE).indicator == "warning"
    assert post.HEMORRHAGE not in ids(
        post_cards(measurements=(first, meas("hemoglobin", 10.5, VA_T + 20 * H)))
    )
    assert (
        card(post_cards(measurements=(meas("hemoglobin", 7.6, VA_T + 5 * H),)), post.HEMORRHAGE).indicator
        == "warning"
    )
    assert post.HEMORRHAGE not in ids(post_cards())  # missing: no Hb at all


# ---- pain: absolute severity as well as the rise ----------------------------------------------------------


def test_pain_9_of_10_on_day_3_fires_not_in_the_first_24_h_nor_after_6_weeks() -> None:
    day3 = meas("pain", 9, VA_T + 3 * DAY)
    spec = card(post_cards(measurements=(day3,), now=VA_T + 3 * DAY + H), post.PAIN)
    assert spec.indicator == "warning"
    for cause in ("adjacent fracture", "leak", "infection", "pedicle fracture", "myofascial", "transient"):
        assert cause in spec.detail
    assert post.PAIN not in ids(post_cards(measurements=(meas("pain", 9, VA_T + 12 * H),), now=VA_T + DAY))
    late = meas("pain", 9, VA_T + 50 * DAY)
    assert post.PAIN not in ids(post_cards(measurements=(late,), now=VA_T + 50 * DAY + H))
    assert post.PAIN not in ids(post_cards(measurements=(meas("pain", 6, VA_T + 3 * DAY),)))
    assert post.PAIN not in ids(post_cards(now=VA_T + 3 * DAY))  # missing: no score


def test_pain_with_fever_or_raised_crp_adds_mri_with_contrast() -> None:
    t = VA_T + 3 * DAY
    plain = card(post_cards(measurements=(meas("pain", 8, t),), now=t + H), post.PAIN)
    assert "MR Spine WO and W contrast IV" not in suggested_codes(plain)
    febrile = post_cards(measurements=(meas("pain", 8, t), meas("crp", 60, t)), now=t + H)
    # The contrast MRI is suggested once, on the more severe or first card that asks for it.
    all_codes = [c for s in febrile for c in suggested_codes(s)]
    assert all_codes.count("MR Spine WO and W contrast IV") == 1


# ---- hypersensitivity: steps that fit the time since the reaction ------------------------------------------


def test_hives_20_h_after_the_va_are_a_warning_without_tryptase_or_cement_injection_steps() -> None:
    onset = VA_T + H
    hives = cond("hypersensitivity-reaction", onset, display="Urticaria")
    spec = card(post_cards(conditions=(hives,), now=onset + 20 * H), post.HYPERSENSITIVITY)
    assert spec.indicator == "warning"
    assert "halt" not in spec.detail.lower() and "cement injection" not in spec.detail.lower()
    codes = suggested_codes(spec)
    assert "Tryptase [Mass/volume] in Serum or Plasma" not in codes  # past the 4 h window
    assert "Referral to clinical allergist" in codes
    allergy = spec.suggestions[-1].resources[0]
    assert allergy["verificationStatus"]["coding"][0]["code"] == "unconfirmed"
    assert allergy["criticality"] == "unable-to-assess"
    assert allergy["reaction"][0]["manifestation"][0]["text"] == "Urticaria"
    assert allergy["reaction"][0]["onset"].startswith(onset.date().isoformat())
    assert "undetermined" in allergy["code"]["text"].lower()


def test_anaphylaxis_is_critical_within_6_h_with_tryptase_within_4_h_then_a_warning() -> None:
    onset = VA_T + H
    ana = (cond("anaphylaxis", onset),)
    acute = card(post_cards(conditions=ana, now=onset + 2 * H), post.HYPERSENSITIVITY)
    assert acute.indicator == "critical"
    tryptase = acute.suggestions[0].resources[0]
    assert tryptase["code"]["coding"][0]["code"] == "21582-2" and tryptase["priority"] == "stat"
    assert acute.suggestions[-1].resources[0]["criticality"] == "high"
    five_h = card(post_cards(conditions=ana, now=onset + 5 * H), post.HYPERSENSITIVITY)
    assert five_h.indicator == "critical"
    assert "Tryptase [Mass/volume] in Serum or Plasma" not in suggested_codes(five_h)
    later = card(post_cards(conditions=ana, now=onset + 7 * H), post.HYPERSENSITIVITY)
    assert later.indicator == "warning"
    # Missing: a reaction without a date cannot be tied to the procedure → no card.
    assert post.HYPERSENSITIVITY not in ids(post_cards(conditions=(cond("anaphylaxis", None),)))


# ---- bone health aware of oncology ----------------------------------------------------------------------


def test_bone_health_silent_with_active_myeloma_or_metastasis() -> None:
    myeloma = cond("myeloma-metastasis", NOW - 400 * DAY, display="Multiple myeloma")
    assert post.BONE_HEALTH not in ids(post_cards(conditions=(myeloma,), medications=[]))
    resolved = cond("myeloma-metastasis", NOW - 400 * DAY, active=False)
    assert post.BONE_HEALTH in ids(post_cards(conditions=(resolved,), medications=[]))
    assert post.BONE_HEALTH in ids(post_cards(medications=[]))  # missing: no oncology on record → card
    failed = run_post(make_facts(procedures=[va()], medications=[]), unavailable=["conditions"])
    assert post.BONE_HEALTH not in ids(failed)  # cancer status unknown: no claim either way


def test_bone_health_is_info_beside_a_critical_card_and_names_the_dxa_interval_as_policy() -> None:
    cards = post_cards(measurements=(spo2(85),), medications=[])
    assert card(cards, post.BONE_HEALTH).indicator == "info"
    calm = card(post_cards(medications=[]), post.BONE_HEALTH)
    assert calm.indicator == "warning" and "institutional" in calm.detail
    treated = post_cards(medications=[med("alendronate")], measurements=(spo2(85),))
    assert post.BONE_HEALTH not in ids(treated)


# ---- future-dated evidence is ignored (V2.10) -----------------------------------------------------------


def test_future_dated_findings_are_ignored() -> None:
    tomorrow = NOW + DAY
    assert post.PCE not in ids(post_cards(measurements=(spo2(80, tomorrow),)))
    assert post.NEURO not in ids(post_cards(conditions=(cond("cauda-equina", tomorrow),)))
    # A future low value does not hide the current one either.
    assert post.PCE in ids(post_cards(measurements=(spo2(85, NOW - H), spo2(99, tomorrow))))


# ---- deceased patient (V2.4) and isolated rules (V2.9) ---------------------------------------------------


def _deceased(facts, on=None):  # type: ignore[no-untyped-def]
    from fhir_mappings.facts import Evidence, PatientFact

    facts.patient = PatientFact(
        Evidence("Patient/pat1", "female"), None, "female", deceased=True, deceased_on=on
    )
    return facts


def test_deceased_patient_gets_no_post_or_discharge_cards() -> None:
    alarming = make_facts(procedures=[va()], measurements=[spo2(80)], medications=[])
    assert run_post(_deceased(alarming)) == []
    assert run_discharge(_deceased(make_facts(procedures=[va()], medications=[]))) == []
    # A death date after now is a data error (V2.10): the patient is treated as alive.
    alive = _deceased(make_facts(procedures=[va()], measurements=[spo2(80)]), on=NOW + DAY)
    assert post.PCE in ids(run_post(alive))
    # Missing: no Patient resource at all is not a death record.
    assert post.PCE in ids(run_post(make_facts(procedures=[va()], measurements=[spo2(80)])))


def test_a_failing_rule_gives_check_failed_and_the_others_still_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hooks.postprocedure import rules
    from hooks.postprocedure.context import RuleContext

    def broken(c: RuleContext) -> None:
        raise ValueError("unexpected data")

    monkeypatch.setattr(
        rules, "RULES", tuple((rid, broken if rid == post.NEURO else fn) for rid, fn in rules.RULES)
    )
    monkeypatch.setattr("hooks.postprocedure.service.RULES", rules.RULES)
    cards = post_cards(measurements=(spo2(85),), conditions=(cond("cauda-equina", VA_T + 2 * H),))
    assert post.PCE in ids(cards) and post.NEURO not in ids(cards)
    failed = card(cards, "sys.check-failed")
    assert failed.indicator == "warning" and post.NEURO in failed.detail


def test_every_policy_key_on_a_post_or_discharge_rule_page_is_in_the_policy_file_with_a_source() -> None:
    from hooks.discharge.docs import RULE_DOCS as DISCHARGE_DOCS
    from hooks.postprocedure.docs import RULE_DOCS as POST_DOCS
    from tests.post.factories import POLICY

    for doc in (*POST_DOCS, *DISCHARGE_DOCS):
        for key in doc.policy_keys:
            section, _, name = key.partition(".")
            entry = POLICY.windows_days.get(name) if section == "windows_days" else POLICY.thresholds.get(key)
            assert entry is not None and entry.source.strip(), (doc.rule_id, key)


def test_a_lab_with_a_current_result_is_not_suggested_again() -> None:
    crp_code = "C reactive protein [Mass/volume] in Serum or Plasma"
    fresh = meas("crp", 60, NOW - 2 * H)
    spec = card(post_cards(measurements=(fresh,)), post.INFECTION)
    assert crp_code not in suggested_codes(spec)  # resulted 2 h ago: current
    assert "CBC panel - Blood by Automated count" in suggested_codes(spec)  # no WBC/Hb result: ordered
    # Missing: no current CRP (the raised one is 30 h old) → it is offered.
    old = meas("crp", 60, NOW - 30 * H)
    later = run_post(make_facts(procedures=[va(VA_T - 2 * DAY)], measurements=[old]), now=NOW)
    assert crp_code in suggested_codes(card(later, post.INFECTION))
