"""va-postprocedure rules at the facts level: positive, before-the-VA, outside-window, window boundary, and
missing/failed data for every rule, with a fixed clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from cds_service.cards import build_card
from hooks.postprocedure import rules as post
from tests.post.factories import (
    POLICY,
    VA_T,
    card,
    cond,
    ids,
    make_facts,
    meas,
    policy_with,
    run_post,
    va,
)

# A finding builder: finding time → extra facts (conditions / measurements) holding that finding.
Builder = Callable[[datetime], dict[str, list[Any]]]


def _c(concept: str) -> Builder:
    return lambda t: {"conditions": [cond(concept, t)]}


def _m(kind: str, value: float) -> Builder:
    return lambda t: {"measurements": [meas(kind, value, t)]}


def _hb_drop(t: datetime) -> dict[str, list[Any]]:
    # Baseline two days before the default VA; the later value is the finding.
    return {"measurements": [meas("hemoglobin", 12.5, VA_T - timedelta(days=2)), meas("hemoglobin", 10.4, t)]}


def _hr_dyspnea(t: datetime) -> dict[str, list[Any]]:
    return {"measurements": [meas("heart_rate", 118, t)], "conditions": [cond("dyspnea", t)]}


def _pleuritic_desat(t: datetime) -> dict[str, list[Any]]:
    return {"measurements": [meas("spo2", 89, t)], "conditions": [cond("pleuritic-pain", t)]}


def _pain_rise(t: datetime) -> dict[str, list[Any]]:
    # Post-VA low of 3 one hour after the VA, then 6 at the finding time.
    return {"measurements": [meas("pain", 3, VA_T + timedelta(hours=1)), meas("pain", 6, t)]}


SPINAL = (
    "new-motor-deficit",
    "saddle-anesthesia",
    "bowel-bladder-dysfunction",
    "myelopathy",
    "cord-compression",
    "cauda-equina",
)

# (name, rule whose card carries the finding, builder, indicator). Findings folded into another rule's card
# (pleural evidence shared with the embolism or hemorrhage card) are in FOLDED_CASES below.
CASES: list[tuple[str, str, Builder, str]] = [
    ("pce-spo2", post.PCE, _m("spo2", 88), "critical"),
    ("pce-resp-rate-alone", post.PCE, _m("resp_rate", 28), "warning"),
    ("pce-hr-with-dyspnea", post.PCE, _hr_dyspnea, "critical"),
    ("pce-pe-condition", post.PCE, _c("pulmonary-embolism"), "critical"),
    ("pce-pleuritic-pain-alone", post.PCE, _c("pleuritic-pain"), "warning"),
    ("pce-hypoxemia-condition", post.PCE, _c("hypoxemia"), "warning"),
    *[(f"neuro-{c}", post.NEURO, _c(c), "critical") for c in SPINAL],
    ("neuro-radiculopathy-alone", post.NEURO, _c("radiculopathy"), "warning"),
    ("infection-fever", post.INFECTION, _m("temperature", 38.4), "critical"),
    *[(f"infection-{c}", post.INFECTION, _c(c), "critical") for c in post.INFECTION_CONCEPTS],
    ("infection-crp-only", post.INFECTION, _m("crp", 45), "warning"),
    ("infection-wbc-only", post.INFECTION, _m("wbc", 14.2), "warning"),
    ("infection-esr-only", post.INFECTION, _m("esr", 55), "warning"),
    ("hemorrhage-hb-drop", post.HEMORRHAGE, _hb_drop, "critical"),
    ("hemorrhage-sbp", post.HEMORRHAGE, _m("systolic_bp", 84), "critical"),
    ("hemorrhage-unspecified-bleeding", post.HEMORRHAGE, _c("hemorrhage"), "warning"),
    (
        "hemorrhage-retroperitoneal",
        post.HEMORRHAGE,
        lambda t: {"conditions": [cond("hemorrhage", t, display="Retroperitoneal hematoma")]},
        "critical",
    ),
    ("hemorrhage-hemothorax", post.HEMORRHAGE, _c("hemothorax"), "critical"),
    ("pleural-pneumothorax", post.PLEURAL, _c("pneumothorax"), "critical"),
    ("pain-score-rise", post.PAIN, _pain_rise, "warning"),
    ("pain-back-pain-condition", post.PAIN, _c("back-pain"), "warning"),
    ("fracture-new", post.FRACTURE, _c("vertebral-fracture"), "warning"),
    ("hypersensitivity-anaphylaxis", post.HYPERSENSITIVITY, _c("anaphylaxis"), "critical"),
    ("hypersensitivity-reaction", post.HYPERSENSITIVITY, _c("hypersensitivity-reaction"), "warning"),
]
CASE_IDS = [c[0] for c in CASES]


def _facts(build: Builder, t: datetime, va_start: datetime = VA_T) -> Any:
    return make_facts(procedures=[va(va_start)], **build(t))


@pytest.mark.parametrize(("name", "rule_id", "build", "indicator"), CASES, ids=CASE_IDS)
def test_positive_finding_after_the_va_fires(name: str, rule_id: str, build: Builder, indicator: str) -> None:
    t = VA_T + timedelta(hours=2)
    cards = run_post(_facts(build, t), now=t + timedelta(hours=1))
    spec = card(cards, rule_id)
    assert spec.indicator == indicator
    assert post.FOLLOWUP not in ids(cards)  # a complication card replaces the follow-up reminder
    assert spec.evidence, "every complication card cites its evidence"
    assert spec.policy_used["window_days"] == POLICY.window_days(rule_id)


@pytest.mark.parametrize(("name", "rule_id", "build", "indicator"), CASES, ids=CASE_IDS)
def test_same_finding_before_the_va_is_baseline(
    name: str, rule_id: str, build: Builder, indicator: str
) -> None:
    t = VA_T - timedelta(days=1)
    cards = run_post(_facts(build, t), now=VA_T + timedelta(hours=3))
    assert rule_id not in ids(cards)
    assert post.FOLLOWUP in ids(cards)  # the VA is in scope; nothing else fired


@pytest.mark.parametrize(("name", "rule_id", "build", "indicator"), CASES, ids=CASE_IDS)
def test_finding_just_outside_the_window_does_not_fire(
    name: str, rule_id: str, build: Builder, indicator: str
) -> None:
    # A long look-back keeps the service in scope, so the rule's own window is what is tested.
    policy = policy_with(post_lookback_days=2000)
    window = policy.window_days(rule_id)
    t = VA_T + timedelta(days=window, minutes=1)
    cards = run_post(_facts(build, t), now=t + timedelta(hours=1), policy=policy)
    assert rule_id not in ids(cards)


@pytest.mark.parametrize(("name", "rule_id", "build", "indicator"), CASES, ids=CASE_IDS)
def test_finding_exactly_at_the_window_end_fires(
    name: str, rule_id: str, build: Builder, indicator: str
) -> None:
    policy = policy_with(post_lookback_days=2000)
    t = VA_T + timedelta(days=policy.window_days(rule_id))
    cards = run_post(_facts(build, t), now=t + timedelta(hours=1), policy=policy)
    assert card(cards, rule_id).indicator == indicator


# Pleural findings from the same evidence as another card are a line of that card, never a second card.
FOLDED_CASES: list[tuple[str, Builder, str, str]] = [
    ("pleuritic-pain-with-desaturation", _pleuritic_desat, post.PCE, "pneumothorax or hemothorax"),
    (
        "dyspnea-with-hypoxemia",
        lambda t: {"conditions": [cond("dyspnea", t), cond("hypoxemia", t)]},
        post.PCE,
        "pneumothorax or hemothorax",
    ),
    ("hemothorax", _c("hemothorax"), post.HEMORRHAGE, "chest drain"),
]


@pytest.mark.parametrize(("name", "build", "host", "text"), FOLDED_CASES, ids=[c[0] for c in FOLDED_CASES])
def test_pleural_finding_folds_into_the_card_with_the_same_evidence(
    name: str, build: Builder, host: str, text: str
) -> None:
    t = VA_T + timedelta(hours=2)
    cards = run_post(_facts(build, t), now=t + timedelta(hours=1))
    assert post.PLEURAL not in ids(cards)  # folded, not a second critical card
    spec = card(cards, host)
    assert spec.indicator == "critical" and text in spec.detail
    # The host card carries the pleural finding (org.va-cds.findings) and its evidence, tagged with it.
    assert [f.rule_id for f in spec.folded] == [post.PLEURAL]
    wire = build_card(spec, "https://cds.example.org").extension or {}
    assert wire["org.va-cds.findings"] == [host, post.PLEURAL]
    assert {e["rule"] for e in wire["org.va-cds.evidence"]} == {host, post.PLEURAL}
    # Folded after a lumbar VA: the pleura was never at risk, so no pleural line.
    lumbar = make_facts(procedures=[va(level="L2", region="lumbar")], **build(t))
    assert "pneumothorax" not in card(run_post(lumbar, now=t + timedelta(hours=1)), host).detail.lower()


# Which prefetch source feeds each rule's findings (a failure there = unknown, reported, no card).
SOURCE_OF = {
    post.PCE: "vitals",
    post.NEURO: "conditions",
    post.INFECTION: "labs",
    post.HEMORRHAGE: "labs",
    post.PLEURAL: "conditions",
    post.PAIN: "vitals",
    post.FRACTURE: "conditions",
    post.HYPERSENSITIVITY: "conditions",
}


@pytest.mark.parametrize("rule_id", list(SOURCE_OF))
def test_missing_finding_gives_no_card_and_failed_source_is_reported(rule_id: str) -> None:
    facts = make_facts(procedures=[va()])
    # Absent finding: post rules are triggered by findings only, no *-missing variant.
    assert rule_id not in ids(run_post(facts))
    # Failed source: the rule cannot run; sys.data-unavailable names it and nothing claims an all-clear.
    cards = run_post(facts, unavailable=[SOURCE_OF[rule_id]])
    assert rule_id not in ids(cards)
    sys_card = card(cards, "sys.data-unavailable")
    assert rule_id in sys_card.detail


def test_every_rule_at_once_keeps_summaries_short_and_cards_valid() -> None:
    from cds_service.cards import build_cards

    t = VA_T + timedelta(hours=2)
    extra: dict[str, list[Any]] = {"conditions": [], "measurements": []}
    for _, _, build, _ in CASES:
        for key, items in build(t).items():
            extra[key] += items
    facts = make_facts(procedures=[va()], medications=[], **extra)
    cards = run_post(facts, now=t + timedelta(hours=1), unavailable=["imaging"])
    expected = set(post.POST_RULE_IDS) - {post.FOLLOWUP} | {"sys.data-unavailable"}
    assert ids(cards) == expected
    built = build_cards(cards, "https://cds.example.org")  # validates every card and suggestion
    citations = {c.rule_id: c.citation for c in cards}
    for wire in built:
        assert len(wire.summary) < 140, wire.summary
        rule = (wire.extension or {})["org.va-cds.rule"]
        assert citations[rule] in (wire.detail or "")
    assert [c.indicator for c in built][:1] == ["critical"]
