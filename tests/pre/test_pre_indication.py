"""Indication, neurology, allergies and optimisation (catalog V2.5 as amended by V2.11/V2.12)."""

from __future__ import annotations

from datetime import timedelta

from tests.pre.builders import (
    NOW,
    allergy,
    by_rule,
    carried,
    cond,
    interruptive,
    meas,
    mri,
    order,
    priorities,
    ready_facts,
    rows,
    run,
    suggested_codes,
    va_order,
)

NEURO = "pre.indication.neuro-red-flags"
WALL = "pre.indication.posterior-wall"
MISSING = "pre.indication.concordance-missing"
DISCORDANT = "pre.indication.concordance-discordant"
CONTRAST = "pre.allergy.contrast"
CEMENT = "pre.allergy.cement"
SEDATION = "pre.sedation.cardiopulmonary"
GLYCEMIC = "pre.optimization.glycemic"
CHECKLIST = "pre.checklist"


# ---- pre.indication.neuro-red-flags ----


def test_new_cord_compression_is_critical_with_a_stat_spine_surgery_referral() -> None:
    f = ready_facts()
    f.conditions.append(cond("cord-compression", display="Spinal cord compression", onset=timedelta(days=5)))
    card = by_rule(run(f))[NEURO]
    assert card.indicator == "critical"
    assert suggested_codes(card) == ["308482002"] and priorities(card) == {"stat"}


def test_why_paralysis_recorded_in_2009_is_no_critical_neuro_card() -> None:
    f = ready_facts()
    f.conditions.append(
        cond("new-motor-deficit", display="Paraplegia", onset=None, recorded=timedelta(days=6200))
    )
    cards = run(f)
    assert NEURO not in carried(cards)
    assert not any(c.indicator == "critical" for c in cards)
    row = rows(f)["neuro"]
    assert "baseline deficit on record (Paraplegia): document the baseline exam" in row.evidence


def test_chronic_or_hemiplegia_never_fires_stenosis_alone_is_the_neuro_row() -> None:
    for c in (
        cond("myelopathy", display="Chronic myelopathy", onset=timedelta(days=10), chronic=True),
        cond("hemiplegia", display="Hemiplegia after stroke", onset=timedelta(days=10)),
    ):
        f = ready_facts()
        f.conditions.append(c)
        assert NEURO not in carried(run(f))
    g = ready_facts()
    g.conditions.append(cond("canal-stenosis", display="Lumbar spinal stenosis"))
    assert NEURO not in carried(run(g))
    assert "Lumbar spinal stenosis" in rows(g)["neuro"].evidence


def test_undated_deficit_not_chronic_counts_as_new() -> None:
    f = ready_facts()
    f.conditions.append(cond("cauda-equina", display="Cauda equina syndrome", onset=None))
    assert by_rule(run(f))[NEURO].indicator == "critical"


def test_no_deficit_neuro_row_asks_for_a_baseline_exam() -> None:
    f = ready_facts()
    assert NEURO not in carried(run(f))
    assert rows(f)["neuro"].status == "needs-documentation"


# ---- pre.indication.posterior-wall ----


def test_retropulsion_on_imaging_is_a_warning_with_ct_and_surgical_opinion() -> None:
    f = ready_facts()
    f.imaging = [mri(findings=("edema", "acute", "retropulsion"))]
    card = by_rule(run(f))[WALL]
    assert card.indicator == "warning"
    assert suggested_codes(card) == ["36530-4", "308482002"]


def test_posterior_wall_folds_into_a_new_neuro_deficit() -> None:
    f = ready_facts()
    f.conditions += [
        cond("posterior-wall", display="Posterior wall fracture"),
        cond("cord-compression", onset=timedelta(days=3)),
    ]
    cards = run(f)
    assert carried(cards)[WALL] == NEURO
    assert len([s for s in by_rule(cards)[NEURO].suggestions if "neurosurgeon" in s.description]) == 1


def test_no_posterior_wall_finding_no_card_and_an_old_report_does_not_count() -> None:
    assert WALL not in carried(run(ready_facts()))
    f = ready_facts()
    f.imaging = [mri(), mri(ago=timedelta(days=900), findings=("retropulsion",))]
    assert WALL not in carried(run(f))


# ---- concordance ----


def test_no_current_spine_imaging_is_folded_with_a_stir_mri_order() -> None:
    f = ready_facts()
    f.imaging = [mri(ago=timedelta(weeks=20))]
    cards = run(f)
    assert carried(cards)[MISSING] == CHECKLIST
    assert "36067-7" in suggested_codes(by_rule(cards)[CHECKLIST])
    assert rows(f)["imaging"].status == "problem"


def test_current_ct_satisfies_imaging_and_is_named() -> None:
    f = ready_facts()
    f.imaging = [mri(modality="ct", findings=("acute",))]
    assert MISSING not in carried(run(f))
    assert "CT" in rows(f)["imaging"].evidence


def test_failed_imaging_source_is_unknown_not_missing() -> None:
    f = ready_facts()
    f.imaging = []
    cards = run(f, unavailable=["imaging"])
    assert MISSING not in carried(cards) and "sys.data-unavailable" in by_rule(cards)


def test_discordant_imaging_is_a_warning_concordant_is_not() -> None:
    f = ready_facts()
    f.imaging = [mri(findings=("no-edema",))]
    assert by_rule(run(f))[DISCORDANT].indicator == "warning"
    g = ready_facts()
    g.imaging = [mri(levels=("T8",))]
    assert "L1" in by_rule(run(g))[DISCORDANT].summary
    assert DISCORDANT not in carried(run(ready_facts()))
    h = ready_facts()
    h.imaging = []
    assert DISCORDANT not in carried(run(h))


# ---- allergies ----


def test_true_contrast_allergy_is_a_card_iodine_or_shellfish_is_folded() -> None:
    f = ready_facts()
    f.allergies.append(allergy("contrast-iodinated", "Iodinated contrast media"))
    assert by_rule(run(f))[CONTRAST].indicator == "warning"
    g = ready_facts()
    g.allergies.append(allergy("contrast-class", "Shellfish"))
    cards = run(g)
    assert carried(cards)[CONTRAST] == CHECKLIST
    assert "not a contrast allergy; ask" in by_rule(cards)[CHECKLIST].detail
    assert CONTRAST not in carried(run(ready_facts()))


def test_cement_allergy_is_critical_with_a_stat_allergy_referral() -> None:
    f = ready_facts()
    f.allergies.append(allergy("bone-cement", "Methyl methacrylate"))
    card = by_rule(run(f))[CEMENT]
    assert card.indicator == "critical" and suggested_codes(card) == ["306272008"]
    assert priorities(card) == {"stat"}
    g = ready_facts()
    g.allergies.append(allergy("bone-cement", active=False))
    assert CEMENT not in carried(run(g))


def test_referral_not_repeated_when_already_active() -> None:
    f = ready_facts()
    f.allergies.append(allergy("bone-cement"))
    f.orders.append(order("consult-allergy", draft=False, status="active"))
    assert by_rule(run(f))[CEMENT].suggestions == ()


# ---- sedation and glycaemic control ----


def test_cardiopulmonary_disease_is_folded_and_asks_for_a_room_air_spo2() -> None:
    f = ready_facts()
    f.conditions.append(cond("copd", display="COPD"))
    cards = run(f)
    assert carried(cards)[SEDATION] == CHECKLIST and not interruptive(cards)
    assert "room-air SpO₂" in by_rule(cards)[CHECKLIST].detail
    assert SEDATION not in carried(run(ready_facts()))


def test_poor_glycaemic_control_is_a_warning_good_or_unknown_control_is_not() -> None:
    f = ready_facts()
    f.conditions.append(cond("diabetes"))
    f.measurements.append(meas("hba1c", 9.1, timedelta(days=20)))
    assert by_rule(run(f))[GLYCEMIC].indicator == "warning"
    g = ready_facts()
    g.conditions.append(cond("diabetes"))
    g.measurements.append(meas("hba1c", 7.0, timedelta(days=20)))
    assert GLYCEMIC not in carried(run(g))
    h = ready_facts()
    h.conditions.append(cond("diabetes"))  # no HbA1c at all: not a glycaemic card, the row stays open
    assert GLYCEMIC not in carried(run(h))
    assert rows(h)["optimisation"].status != "met"


def test_glycaemic_window_is_measured_to_the_anchor() -> None:
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=60)))
    f.conditions.append(cond("diabetes"))
    f.measurements.append(meas("hba1c", 9.1, timedelta(days=60)))  # 120 days before the VA
    assert GLYCEMIC not in carried(run(f))
