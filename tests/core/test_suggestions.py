"""V2.7: each order suggested at most once per response, on the most severe card that needs it."""

from __future__ import annotations

from typing import Any

from cds_service.cards import build_cards
from cds_service.contracts import CardSpec, SuggestionSpec
from cds_service.suggestions import dedupe_suggestions, order_keys

LOINC = "http://loinc.org"
BASE = "https://cds.example.org"


def sr(code: str | None, text: str = "order") -> dict[str, Any]:
    cc: dict[str, Any] = {"text": text}
    if code is not None:
        cc["coding"] = [{"system": LOINC, "code": code}]
    return {"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "code": cc}


def suggest(*resources: dict[str, Any], label: str = "Order") -> SuggestionSpec:
    return SuggestionSpec(label=label, resources=tuple(resources), description=label)


def spec(rule: str, indicator: str, *suggestions: SuggestionSpec) -> CardSpec:
    return CardSpec(
        rule_id=rule,
        indicator=indicator,  # type: ignore[arg-type]
        summary=f"{rule} summary",
        detail=f"{rule} says what to do",
        citation="test",
        suggestions=suggestions,
    )


def _offered(card: Any) -> list[str]:
    return [
        coding["code"] if "coding" in a.resource["code"] else a.resource["code"]["text"]
        for s in card.suggestions or ()
        for a in s.actions or ()
        for coding in (a.resource["code"].get("coding") or [{}])
    ]


def test_same_code_goes_to_the_most_severe_card_and_the_other_keeps_its_text() -> None:
    checklist = spec("pre.checklist", "info", suggest(sr("6301-6", "INR"), label="INR"))
    coag = spec("pre.coag.labs-out-of-range", "critical", suggest(sr("6301-6", "INR"), label="Repeat INR"))
    cards = build_cards([checklist, coag], BASE)
    by_rule = {c.extension["org.va-cds.rule"]: c for c in cards}  # type: ignore[index]
    assert _offered(by_rule["pre.coag.labs-out-of-range"]) == ["6301-6"]
    info = by_rule["pre.checklist"]
    assert info.suggestions is None and info.selectionBehavior is None
    assert info.detail is not None and "says what to do" in info.detail


def test_different_codes_are_all_kept() -> None:
    a = spec("a", "warning", suggest(sr("6301-6")))
    b = spec("b", "warning", suggest(sr("58410-2")))
    out = dedupe_suggestions([a, b])
    assert out == [a, b]


def test_partial_duplicate_keeps_the_rest_of_a_suggestion() -> None:
    a = spec("a", "critical", suggest(sr("6301-6")))
    b = spec("b", "info", suggest(sr("6301-6"), sr("58410-2"), label="INR + CBC"))
    _, kept = dedupe_suggestions([a, b])
    (only,) = kept.suggestions
    assert [r["code"]["coding"][0]["code"] for r in only.resources] == ["58410-2"]


def test_within_one_card_the_same_order_is_offered_once() -> None:
    a = spec("a", "warning", suggest(sr("6301-6"), label="x"), suggest(sr("6301-6"), label="y"))
    (out,) = dedupe_suggestions([a])
    assert [s.label for s in out.suggestions] == ["x"]


def test_text_only_orders_compare_by_text_and_uncoded_resources_are_never_merged() -> None:
    # missing codes: the text is the order's identity (spacing and case do not matter) ...
    assert order_keys(sr(None, "Spine surgery  consult")) == order_keys(sr(None, "spine surgery consult"))
    a = spec("a", "critical", suggest(sr(None, "Spine surgery consult")))
    b = spec("b", "warning", suggest(sr(None, "spine surgery consult")))
    assert dedupe_suggestions([a, b])[1].suggestions == ()
    # ... and a resource with neither code nor text is never taken for another one.
    bare = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order"}
    c = spec("c", "warning", suggest(bare))
    d = spec("d", "info", suggest(dict(bare)))
    assert dedupe_suggestions([c, d]) == [c, d]


def test_same_code_in_another_resource_type_is_another_order() -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": LOINC, "code": "6301-6"}]},
    }
    a = spec("a", "critical", suggest(sr("6301-6")))
    b = spec("b", "info", suggest(allergy))
    assert dedupe_suggestions([a, b]) == [a, b]
