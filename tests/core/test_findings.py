"""Findings and cards (catalog V2.2): what a card carries, and that an off-catalog finding cannot be built."""

from __future__ import annotations

import pytest

from cds_service.cards import build_card
from cds_service.contracts import CardSpec, Finding
from fhir_mappings.facts import Evidence

INR = Evidence("Observation/inr-1", "INR 2.6 on 2026-11-28")
WARFARIN = Evidence("MedicationRequest/w1", "warfarin 5 mg, last ordered 2026-11-20")


def _finding(rule_id: str, evidence: Evidence, line: str = "") -> Finding:
    return Finding(
        rule_id=rule_id,
        indicator="warning",
        summary=f"{rule_id} fired",
        detail="Why, in a line.",
        citation="Chapter §2.1",
        evidence=(evidence,),
        line=line,
    )


def test_a_card_lists_its_own_finding_first_then_the_folded_ones_and_tags_evidence() -> None:
    own = _finding("pre.coag.antithrombotic-active", WARFARIN)
    folded = _finding("pre.coag.labs-out-of-range", INR, line="INR 2.6 on 28 Nov, expected on warfarin")
    card = build_card(CardSpec.from_finding(own, folded=(folded,)), "https://cds.example.org")
    ext = card.extension or {}
    assert ext["org.va-cds.rule"] == "pre.coag.antithrombotic-active"
    assert ext["org.va-cds.findings"] == ["pre.coag.antithrombotic-active", "pre.coag.labs-out-of-range"]
    assert ext["org.va-cds.evidence"] == [
        {"reference": "MedicationRequest/w1", "summary": WARFARIN.summary, "rule": own.rule_id},
        {"reference": "Observation/inr-1", "summary": INR.summary, "rule": folded.rule_id},
    ]
    assert "INR 2.6 on 28 Nov, expected on warfarin" in (card.detail or "")


def test_a_card_without_folded_findings_still_names_its_own() -> None:
    card = build_card(CardSpec.from_finding(_finding("pre.allergy.cement", INR)), "https://cds.example.org")
    assert (card.extension or {})["org.va-cds.findings"] == ["pre.allergy.cement"]


@pytest.mark.parametrize("rule_id, citation", [("", "Chapter §1"), ("pre.allergy.cement", "")])
def test_a_finding_without_rule_id_or_citation_cannot_be_built(rule_id: str, citation: str) -> None:
    with pytest.raises(ValueError, match="rule id and a citation"):
        Finding(rule_id=rule_id, indicator="info", summary="s", detail="d", citation=citation)


def test_the_wire_model_refuses_a_findings_list_not_led_by_the_card_rule() -> None:
    card = build_card(CardSpec.from_finding(_finding("pre.allergy.cement", INR)), "https://cds.example.org")
    data = card.model_dump(mode="json", exclude_none=True)
    data["extension"]["org.va-cds.findings"] = ["pre.allergy.contrast", "pre.allergy.cement"]
    with pytest.raises(ValueError, match="own first"):
        type(card).model_validate(data)
