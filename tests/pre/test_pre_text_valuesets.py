"""Text-only value sets the v2 rules read (no verified code exists for them in terminology.md): a recent VTE,
a mechanical valve or a recent coronary stent next to an anticoagulant adds the thrombotic-risk line; a back
cellulitis over the access site makes active infection critical. Each goes through real FHIR extraction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fhir_mappings.extract import extract_facts
from fhir_mappings.facts import ClinicalFacts
from tests.pre.builders import NOW, by_rule, med, ready_facts, run

ACTIVE = "pre.coag.antithrombotic-active"
INFECTION = "pre.infection.active"


def _condition(text: str, onset: timedelta | None, status: str = "active") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/pat-1"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]
        },
        "code": {"text": text},
    }
    if onset is not None:
        resource["onsetDateTime"] = (NOW - onset).isoformat()
    return resource


def _with(condition: dict[str, Any]) -> ClinicalFacts:
    """The ready patient plus the conditions real extraction reads from one Condition resource."""
    facts = ready_facts()
    facts.conditions += extract_facts([condition], patient_id="pat-1", now=NOW).conditions
    return facts


def _on_warfarin(facts: ClinicalFacts) -> ClinicalFacts:
    facts.medications.append(med("warfarin", "anticoagulant"))
    return facts


def test_recent_dvt_on_warfarin_adds_the_thrombotic_risk_line() -> None:
    facts = _on_warfarin(_with(_condition("Deep vein thrombosis of left leg", timedelta(days=40))))
    assert "Thrombotic risk" in by_rule(run(facts))[ACTIVE].detail


def test_old_dvt_or_dvt_prophylaxis_does_not() -> None:
    old = _on_warfarin(_with(_condition("Deep vein thrombosis of left leg", timedelta(days=400))))
    assert "Thrombotic risk" not in by_rule(run(old))[ACTIVE].detail
    prophylaxis = _on_warfarin(_with(_condition("VTE prophylaxis", timedelta(days=10))))
    assert "Thrombotic risk" not in by_rule(run(prophylaxis))[ACTIVE].detail


def test_mechanical_valve_on_warfarin_adds_the_line_without_a_date() -> None:
    facts = _on_warfarin(_with(_condition("Presence of mechanical heart valve", None)))
    assert "Thrombotic risk" in by_rule(run(facts))[ACTIVE].detail


def test_recent_coronary_stent_adds_the_line_an_old_one_does_not() -> None:
    recent = _on_warfarin(_with(_condition("Drug-eluting coronary stent", timedelta(days=60))))
    assert "Thrombotic risk" in by_rule(run(recent))[ACTIVE].detail
    old = _on_warfarin(_with(_condition("Drug-eluting coronary stent", timedelta(days=800))))
    assert "Thrombotic risk" not in by_rule(run(old))[ACTIVE].detail


def test_back_cellulitis_is_an_active_infection_finding() -> None:
    cards = by_rule(run(_with(_condition("Cellulitis of back", timedelta(days=3)))))
    assert cards[INFECTION].indicator == "critical"


def test_resolved_back_cellulitis_or_no_infection_gives_no_infection_card() -> None:
    resolved = _with(_condition("Cellulitis of back", timedelta(days=60), status="resolved"))
    assert INFECTION not in by_rule(run(resolved))
    assert INFECTION not in by_rule(run(ready_facts()))
