"""Pure parts of alert memory: the fingerprint, the memory policy block, and how an earlier decision is
worded on the card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cds_service.cards import build_cards
from cds_service.contracts import CardSpec
from cds_service.memory.apply import apply_memory
from cds_service.memory.fingerprint import FINGERPRINT_KEY, card_fingerprint
from cds_service.memory.policy import DEFAULT_SOURCE, MemoryPolicy, parse_memory_policy
from cds_service.persistence.store import FeedbackSeen, RecalledCard
from fhir_mappings.facts import Evidence
from hooks.policy import DEFAULT_POLICY_FILE, PolicyError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def spec(
    *evidence: Evidence, indicator: str = "warning", policy: dict[str, object] | None = None
) -> CardSpec:
    return CardSpec(
        rule_id="test.rule",
        indicator=indicator,  # type: ignore[arg-type]
        summary="A test card",
        detail="Detail.",
        citation="test",
        evidence=evidence,
        policy_used=policy or {},
    )


INR = Evidence("Observation/inr1", "INR 2.4 on 2026-11-28")
PLT = Evidence("Observation/plt1", "Platelets 210 ×10⁹/L on 2026-11-28")


def fp(s: CardSpec) -> str:
    return str((build_cards([s], "https://cds.example.org")[0].extension or {})[FINGERPRINT_KEY])


def test_the_fingerprint_follows_the_evidence_and_nothing_else() -> None:
    base = fp(spec(INR, PLT))
    assert base == fp(spec(PLT, INR))  # order of the evidence list does not matter
    assert base == fp(spec(INR, PLT))  # new uuids on every build do not either
    assert base != fp(spec(Evidence("Observation/inr1", "INR 2.6 on 2026-11-28"), PLT))  # a value
    assert base != fp(spec(Evidence("Observation/inr1", "INR 2.4 on 2026-11-29"), PLT))  # a date
    assert base != fp(spec(Evidence("Observation/inr9", "INR 2.4 on 2026-11-28"), PLT))  # another resource
    assert base != fp(spec(INR))  # a fact gone
    assert base != fp(spec(INR, PLT, indicator="critical"))  # the rule judged it differently
    assert base != fp(spec(INR, PLT, policy={"inr_max": 1.5}))  # under another policy value
    card = build_cards([spec(INR, PLT)], "https://cds.example.org")[0]
    assert card_fingerprint(card) == base  # its own fingerprint extension is not part of it


def test_the_packaged_policy_has_a_memory_block_with_sources() -> None:
    doc = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy = parse_memory_policy(doc)
    assert policy.enabled and policy.override_memory_days == 30 and policy.repeat_memory_hours == 24
    assert policy.max_calls == 200
    assert all(s.source and s.source != DEFAULT_SOURCE for s in policy.settings.values())
    assert "sys.data-unavailable" in policy.rules_off


@pytest.mark.parametrize(
    ("block", "names"),
    [
        ({"override_memory_days": {"value": -1, "unit": "d", "source": "x"}}, "memory.override_memory_days"),
        ({"override_memory_days": {"value": 3, "unit": "h", "source": "x"}}, "memory.override_memory_days"),
        ({"repeat_memory_hours": {"value": 24, "unit": "h"}}, "memory.repeat_memory_hours"),
        ({"enabled": {"value": "yes", "source": "x"}}, "memory.enabled"),
        ({"rules_off": ["sys.data-unavailable"]}, "memory.rules_off"),
        ({"max_calls": {"value": 0, "unit": "calls", "source": "x"}}, "memory.max_calls"),
        ({"max_calls": {"value": 12.5, "unit": "calls", "source": "x"}}, "memory.max_calls"),
        ({"max_calls": {"value": 1e30, "unit": "calls", "source": "x"}}, "memory.max_calls"),
        ({"max_calls": {"value": 50, "unit": "d", "source": "x"}}, "memory.max_calls"),
        ({"override_days": {"value": 3, "source": "x"}}, "memory.override_days"),
        ([], "memory"),
    ],
)
def test_a_malformed_memory_block_stops_start_up_naming_the_key(block: object, names: str) -> None:
    with pytest.raises(PolicyError, match=f"'{names}'"):
        parse_memory_policy({"memory": block})


def test_a_policy_file_without_the_block_gets_the_documented_defaults(tmp_path: Path) -> None:
    policy = parse_memory_policy({"thresholds": {}})
    assert policy == MemoryPolicy(settings=policy.settings)
    assert {s.source for s in policy.settings.values()} == {DEFAULT_SOURCE}


def _earlier(
    card_fp: str, *feedback: FeedbackSeen, shown: datetime = NOW - timedelta(days=2)
) -> RecalledCard:
    return RecalledCard(
        uuid="0b8c2f6e-52a4-4b0a-8f0e-3b9a7c1d2e4f",
        rule_id="test.rule",
        fingerprint=card_fp,
        indicator="warning",
        shown_at=shown,
        hook="order-sign",
        memory=None,
        suggestions=(),
        suggestion_keys=(),
        feedback=feedback,
    )


def _override(code: str | None, display: str | None = None, comment: str | None = None) -> FeedbackSeen:
    return FeedbackSeen("overridden", datetime(2025, 12, 30, 8, tzinfo=UTC), code, display, comment, ())


def test_the_earlier_reason_is_ours_when_we_offered_it_else_the_clients_text_escaped() -> None:
    card = build_cards([spec(INR)], "https://cds.example.org")[0]
    card_fp = card_fingerprint(card)

    def detail(fb: FeedbackSeen) -> str:
        out = apply_memory(
            [card], [_earlier(card_fp, fb)], "order-sign", NOW, MemoryPolicy(override_memory_days=400)
        )
        return str(out.cards[0].detail)

    # Offered by us: our display. Shown with the year, as it is not this year's.
    assert detail(_override("data-outdated")).startswith(
        "**Overridden on 30 Dec 2025: Data outdated or incorrect in the EHR; shown again if the data "
        "change.**"
    )
    assert "Patient declined" in detail(_override("x-declined", "Patient declined"))
    # Free text from the clinician is escaped (no Markdown or HTML from outside) and clipped.
    text = detail(_override(None, None, "<b>see *note*</b> " + "x" * 300))
    assert "<b>" not in text and "&lt;b&gt;" in text and r"\*note\*" in text
    assert "x" * 130 not in text
    assert "no reason given" in detail(_override(None))


def test_without_any_earlier_card_memory_changes_nothing() -> None:
    cards = build_cards([spec(INR), spec(PLT, indicator="critical")], "https://cds.example.org")
    out = apply_memory(list(cards), [], "patient-view", NOW, MemoryPolicy())
    assert out.cards == cards and not out.actions and not out.omitted
