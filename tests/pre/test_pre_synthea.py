"""Realistic records: Synthea patients through the real extractor (fhir_mappings.extract) and the handler.

Catalog V2.2's interruption budget: on ordinary charts a VA order raises at most one interruptive card, and
no critical card comes from data older than its window.
"""

from __future__ import annotations

import pytest

from fhir_mappings.extract import extract_facts
from tests.pre.builders import by_rule, carried, interruptive, rule_ids, run
from tests.pre.synthea import HALLIE, LUIGI, record, va_draft
from tests.shared_paths import SYNTHEA

ALL_RECORDS = sorted(p.name for p in SYNTHEA.glob("*.json"))


def test_hallie_on_warfarin_with_va_draft_gets_one_hold_card_and_the_checklist() -> None:
    pid, resources, last = record(HALLIE)
    cards = run(extract_facts(resources, [va_draft(pid)]), "order-sign", now=last)
    found = carried(cards)
    card = by_rule(cards)["pre.coag.antithrombotic-active"]
    assert "warfarin" in card.summary and "5 days" in card.summary
    assert found["pre.coag.labs-missing"] == "pre.checklist"
    checklist = by_rule(cards)["pre.checklist"]
    assert {s.label for s in checklist.suggestions} >= {"Order INR", "Order CBC"}
    assert [c.rule_id for c in interruptive(cards)] == ["pre.coag.antithrombotic-active"]
    assert not {"pre.indication.neuro-red-flags", "pre.allergy.cement", "pre.infection.active"} & set(found)


def test_hallie_without_va_order_gets_no_cards() -> None:
    _, resources, last = record(HALLIE)
    facts = extract_facts(resources, [])
    assert run(facts, "order-sign", now=last) == []
    assert run(facts, "patient-view", now=last) == []


def test_luigi_without_va_order_gets_no_cards() -> None:
    _, resources, last = record(LUIGI)
    facts = extract_facts(resources, [])
    assert run(facts, "order-sign", now=last) == []
    assert run(facts, "order-select", now=last) == []
    assert run(facts, "patient-view", now=last) == []


def test_luigi_with_va_draft_has_no_antithrombotic_card_and_the_labs_are_a_checklist_row() -> None:
    pid, resources, last = record(LUIGI)
    cards = run(extract_facts(resources, [va_draft(pid)]), "order-sign", now=last)
    found = carried(cards)
    assert "pre.coag.antithrombotic-active" not in found
    assert found["pre.coag.labs-missing"] == "pre.checklist"  # missing work-up is still a finding, folded


@pytest.mark.parametrize("name", ALL_RECORDS)
def test_ordinary_chart_va_order_raises_at_most_one_interruptive_card(name: str) -> None:
    pid, resources, last = record(name)
    facts = extract_facts(resources, [va_draft(pid)], patient_id=pid, now=last)
    cards = run(facts, "order-sign", now=last)
    loud = interruptive(cards)
    assert len(loud) <= 1, [(c.rule_id, c.summary) for c in loud]
    if facts.patient is not None and facts.patient.deceased:
        # Synthea records end at death: the only card is the identity check (V2.12)
        assert [(c.rule_id, c.indicator) for c in cards] == [("pre.patient-deceased", "info")]
    else:
        assert "pre.checklist" in rule_ids(cards)


def test_prior_cement_reaction_recorded_as_text_fires_the_cement_allergy_card() -> None:
    # No code exists for a reaction to bone cement or an implant: it is read from the Condition's text.
    pid, resources, last = record(LUIGI)
    reaction = {
        "resourceType": "Condition",
        "id": "cement-reaction-1",
        "clinicalStatus": {"coding": [{"code": "resolved"}]},
        "code": {"text": "Hypersensitivity reaction to bone cement after knee arthroplasty"},
        "subject": {"reference": f"Patient/{pid}"},
        "recordedDate": "2015-03-02",
    }
    negated = {**reaction, "id": "c2", "code": {"text": "No history of implant reaction"}}
    cards = by_rule(run(extract_facts([*resources, reaction], [va_draft(pid)]), "order-sign", now=last))
    assert cards["pre.allergy.cement"].indicator == "critical"
    assert any(e.reference == "Condition/cement-reaction-1" for e in cards["pre.allergy.cement"].evidence)
    quiet = rule_ids(run(extract_facts([*resources, negated], [va_draft(pid)]), "order-sign", now=last))
    assert "pre.allergy.cement" not in quiet
