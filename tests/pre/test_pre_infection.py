"""Infection (catalog V2.5, amended by V2.12): active infection, raised WBC/CRP, history, screen, risk."""

from __future__ import annotations

from datetime import timedelta

from fhir_mappings.facts import ClinicalFacts
from tests.pre.builders import (
    NOW,
    all_text,
    by_rule,
    carried,
    cond,
    meas,
    med,
    priorities,
    ready_facts,
    rows,
    run,
    suggested_codes,
    va_order,
)

ACTIVE = "pre.infection.active"
LABS = "pre.infection.labs-abnormal"
HISTORY = "pre.infection.history"
SCREEN = "pre.infection.screen-missing"
RISK = "pre.infection.risk-factors"
CHECKLIST = "pre.checklist"


def _infection_labs(wbc: float | None, crp: float | None) -> ClinicalFacts:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind not in ("wbc", "crp")]
    if wbc is not None:
        f.measurements.append(meas("wbc", wbc, timedelta(days=2)))
    if crp is not None:
        f.measurements.append(meas("crp", crp, timedelta(days=2)))
    return f


# ---- pre.infection.active ----


def test_fever_in_the_last_72_hours_is_critical_with_stat_work_up() -> None:
    f = _infection_labs(None, None)
    f.measurements.append(meas("temperature", 38.4, timedelta(hours=10)))
    card = by_rule(run(f))[ACTIVE]
    assert card.indicator == "critical" and "temperature 38.4" in card.summary
    assert set(suggested_codes(card)) == {"58410-2", "1988-5", "30341-2", "600-7"}
    assert priorities(card) == {"stat"}


def test_a_test_with_a_current_readable_result_is_not_suggested_again() -> None:
    f = _infection_labs(7.0, 3.0)  # WBC, platelets and CRP current
    f.measurements.append(meas("temperature", 38.4, timedelta(hours=10)))
    assert set(suggested_codes(by_rule(run(f))[ACTIVE])) == {"30341-2", "600-7"}  # ESR and cultures only


def test_old_fever_or_normal_temperature_no_card() -> None:
    f = ready_facts()
    f.measurements.append(meas("temperature", 38.9, timedelta(hours=80)))
    assert ACTIVE not in carried(run(f))


def test_positive_culture_within_14_days_fires_pending_or_no_growth_never() -> None:
    f = ready_facts()
    f.measurements.append(meas("blood_culture", None, timedelta(days=3), positive=True, text="Staph aureus"))
    assert by_rule(run(f))[ACTIVE].indicator == "critical"
    for text in ("Culture pending", "No growth at 5 days", "in progress"):
        g = ready_facts()
        g.measurements.append(meas("blood_culture", None, timedelta(days=3), positive=True, text=text))
        assert ACTIVE not in carried(run(g)), text
    old = ready_facts()
    old.measurements.append(meas("blood_culture", None, timedelta(days=20), positive=True, text="E. coli"))
    assert ACTIVE not in carried(run(old))


def test_active_spinal_infection_is_critical_resolved_is_history() -> None:
    f = ready_facts()
    f.conditions.append(cond("discitis", display="Infective discitis"))
    assert by_rule(run(f))[ACTIVE].indicator == "critical"
    g = ready_facts()
    g.conditions.append(cond("discitis", active=False))
    cards = run(g)
    assert ACTIVE not in carried(cards) and by_rule(cards)[HISTORY].indicator == "warning"


def test_recent_systemic_infection_warning_when_not_imminent_critical_when_imminent() -> None:
    f = ready_facts()
    f.conditions.append(cond("systemic-infection", display="Pneumonia", onset=timedelta(days=10)))
    assert by_rule(run(f))[ACTIVE].indicator == "warning"
    f.draft_orders = [va_order(planned=NOW + timedelta(hours=30))]
    assert by_rule(run(f))[ACTIVE].indicator == "critical"


def test_systemic_infection_uses_recorded_date_when_no_onset_old_or_undated_is_a_checklist_row() -> None:
    f = ready_facts()
    f.conditions.append(
        cond("systemic-infection", display="Cellulitis", onset=None, recorded=timedelta(days=5))
    )
    assert ACTIVE in carried(run(f))
    for g_onset, g_recorded in ((timedelta(days=200), None), (None, None)):
        g = ready_facts()
        g.conditions.append(
            cond("systemic-infection", display="Pneumonia", onset=g_onset, recorded=g_recorded)
        )
        cards = run(g)
        assert ACTIVE not in carried(cards)
        row = rows(g)["infection"]
        assert row.status != "met" and "Pneumonia" in row.evidence


# ---- pre.infection.labs-abnormal ----


def test_why_wbc_18_and_crp_150_is_never_infection_excluded() -> None:
    f = _infection_labs(18, 150)
    cards = run(f)
    card = by_rule(cards)[LABS]
    assert card.indicator == "warning" and "WBC 18" in card.summary and "CRP 150" in card.summary
    row = rows(f)["infection"]
    assert row.status == "problem" and row.rule_id == LABS


def test_mildly_raised_crp_is_a_checklist_row_not_a_finding() -> None:
    f = _infection_labs(8, 18)
    assert LABS not in carried(run(f))
    row = rows(f)["infection"]
    assert row.status == "needs-documentation"
    assert "CRP 18 mg/L on 19 Nov: confirm the MRI shows no discitis" in row.evidence


def test_mildly_raised_crp_with_diabetes_is_a_card() -> None:
    f = _infection_labs(8, 18)
    f.conditions.append(cond("diabetes"))
    assert by_rule(run(f))[LABS].indicator == "warning"


def test_normal_labs_infection_row_met_only_when_judged() -> None:
    f = _infection_labs(7, 3)
    assert LABS not in carried(run(f))
    assert rows(f)["infection"].status == "met"


def test_labs_abnormal_and_history_fold_into_active_infection() -> None:
    f = _infection_labs(18, 150)
    f.measurements.append(meas("temperature", 38.5, timedelta(hours=3)))
    f.conditions.append(cond("spondylitis", active=False))
    cards = run(f)
    assert carried(cards)[LABS] == ACTIVE and carried(cards)[HISTORY] == ACTIVE
    assert "CRP 150" in all_text(by_rule(cards)[ACTIVE])


# ---- pre.infection.screen-missing ----


def test_neither_wbc_nor_crp_is_a_folded_screen_finding_with_orders_on_the_checklist() -> None:
    cards = run(_infection_labs(None, None))
    assert carried(cards)[SCREEN] == CHECKLIST
    assert {"58410-2", "1988-5"} <= set(suggested_codes(by_rule(cards)[CHECKLIST]))


def test_wbc_or_crp_alone_is_enough() -> None:
    assert SCREEN not in carried(run(_infection_labs(7, None)))
    assert SCREEN not in carried(run(_infection_labs(None, 3)))


def test_failed_infection_source_is_unknown_not_missing() -> None:
    cards = run(_infection_labs(None, None), unavailable=["infectionLabs"])
    assert SCREEN not in carried(cards) and "sys.data-unavailable" in by_rule(cards)
    assert rows(_infection_labs(None, None), unavailable=["infectionLabs"])["infection"].status != "met"


# ---- pre.infection.risk-factors ----


def test_diabetes_or_immunosuppressant_is_folded_into_the_checklist() -> None:
    f = ready_facts()
    f.medications.append(med("methotrexate", "immunosuppressant"))
    cards = run(f)
    assert carried(cards)[RISK] == CHECKLIST
    assert "antibiotic prophylaxis" in by_rule(cards)[CHECKLIST].detail
    assert RISK not in carried(run(ready_facts()))
