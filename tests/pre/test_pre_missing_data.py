"""Missing data for every pre-procedure decision (catalog conventions, V2.4): a source that failed is named by
`sys.data-unavailable` and the checklist row it feeds is never "met"; data that is absent or unreadable is
a finding or an open row, never an all-clear."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fhir_mappings.facts import ClinicalFacts
from tests.pre.builders import (
    NOW,
    allergy,
    by_rule,
    carried,
    cond,
    meas,
    med,
    ready_facts,
    rows,
    run,
    va_order,
)


def _with(*extra: object) -> ClinicalFacts:
    f = ready_facts()
    for item in extra:
        if hasattr(item, "ingredient"):
            f.medications.append(item)  # type: ignore[arg-type]
        elif hasattr(item, "onset"):
            f.conditions.append(item)  # type: ignore[arg-type]
        else:
            f.allergies.append(item)  # type: ignore[arg-type]
    return f


# (failed source, a finding it feeds, the checklist row it feeds)
CASES = [
    ("medicationRequests", "pre.coag.antithrombotic-active", "coagulation"),
    ("conditions", "pre.coag.coagulopathy", "neuro"),
    ("temperature", "pre.infection.active", "infection"),
    ("infectionLabs", "pre.infection.screen-missing", "infection"),
    ("allergies", "pre.allergy.contrast", "contrast"),
    ("imaging", "pre.indication.concordance-missing", "acuity"),
    ("coagLabs", "pre.coag.labs-missing", "coagulation"),
]


@pytest.mark.parametrize(("source", "finding", "row"), CASES)
def test_a_failed_source_is_named_and_its_row_is_never_met(source: str, finding: str, row: str) -> None:
    f = ready_facts()
    f.medications.clear()
    if source in ("infectionLabs", "coagLabs"):
        f.measurements = [m for m in f.measurements if m.kind not in ("wbc", "crp", "inr", "platelets")]
    if source == "imaging":
        f.imaging = []
    cards = run(f, unavailable=[source])
    unavailable = by_rule(cards)["sys.data-unavailable"]
    assert source in str(unavailable.policy_used), source
    assert finding not in carried(cards), f"{finding} fired on a failed source"
    assert rows(f, unavailable=[source])[row].status != "met", row


def test_no_patient_resource_still_runs_and_is_not_deceased() -> None:
    f = ready_facts()
    f.patient = None
    ids = carried(run(f))
    assert "pre.checklist" in ids and "pre.patient-deceased" not in ids


def test_unreadable_crp_is_not_raised_and_keeps_the_infection_row_open() -> None:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind not in ("wbc", "crp")]
    f.measurements.append(meas("crp", None, timedelta(days=1), unusable="unknown unit 'mg'"))
    cards = run(f)
    assert "pre.infection.labs-abnormal" not in carried(cards)
    assert carried(cards)["pre.infection.screen-missing"] == "pre.checklist"
    assert "latest CRP on 20 Nov could not be read" in by_rule(cards)["pre.checklist"].detail
    assert rows(f)["infection"].status != "met"


def test_undated_antithrombotic_still_counts() -> None:
    f = ready_facts()
    undated = med("warfarin")
    f.medications.append(
        type(undated)(**{**{k: getattr(undated, k) for k in undated.__slots__}, "authored": None})
    )
    card = by_rule(run(f))["pre.coag.antithrombotic-active"]
    assert "warfarin" in card.summary and "confirm it is still taken" not in card.detail


def test_no_coagulation_data_and_an_unidentified_drug_never_reads_as_no_antithrombotic() -> None:
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=5)))
    f.measurements = [m for m in f.measurements if m.kind not in ("inr", "platelets")]
    f.unidentified_medications.append(meas("inr", None, timedelta(0)).evidence)
    row = rows(f)["coagulation"]
    assert row.status == "problem" and "could not be identified — review" in row.evidence


def test_chronic_deficit_without_any_date_is_a_baseline_row_not_a_card() -> None:
    f = _with(cond("new-motor-deficit", display="Old left foot drop", onset=None, chronic=True))
    assert "pre.indication.neuro-red-flags" not in carried(run(f))
    assert "Old left foot drop" in rows(f)["neuro"].evidence


def test_inactive_contrast_allergy_is_not_a_contrast_allergy_and_the_row_still_asks() -> None:
    f = _with(allergy("contrast-iodinated", active=False))
    assert "pre.allergy.contrast" not in carried(run(f))
    assert rows(f)["contrast"].status == "needs-documentation"
