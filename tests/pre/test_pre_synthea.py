"""Realistic records: Synthea patients through the real extractor (fhir_mappings.extract) and the handler."""

from __future__ import annotations

from fhir_mappings.extract import extract_facts
from tests.pre.builders import by_rule, rule_ids, run
from tests.pre.synthea import HALLIE, LUIGI, record, va_draft


def test_hallie_on_warfarin_with_va_draft_gets_hold_and_missing_labs() -> None:
    pid, resources, last = record(HALLIE)
    facts = extract_facts(resources, [va_draft(pid)])
    cards = by_rule(run(facts, "order-sign", now=last))
    assert "pre.coag.antithrombotic-active" in cards and "pre.coag.labs-missing" in cards
    assert "warfarin" in cards["pre.coag.antithrombotic-active"].summary
    assert "5 days" in cards["pre.coag.antithrombotic-active"].summary
    missing = cards["pre.coag.labs-missing"]
    assert "no INR within 2 days (patient on warfarin)" in missing.summary
    assert {s.label for s in missing.suggestions} == {"Order INR", "Order CBC"}
    assert "pre.checklist" in cards
    # nothing in her record is a neuro red flag, cement allergy or active infection
    assert not {"pre.indication.neuro-red-flags", "pre.allergy.cement", "pre.infection.active"} & set(cards)


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


def test_luigi_with_va_draft_has_no_antithrombotic_card() -> None:
    pid, resources, last = record(LUIGI)
    ids = rule_ids(run(extract_facts(resources, [va_draft(pid)]), "order-sign", now=last))
    assert "pre.coag.antithrombotic-active" not in ids
    assert "pre.coag.labs-missing" in ids  # a VA order without coagulation labs is still a finding


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
