"""Discharge findings → cards. Discharge cards are a checklist: info, except the missing neurological exam
and the missing bone-health plan (warning: both are to be done before the patient leaves). Text follows V2.8
(summary ≤ 140 characters, detail ≤ 8 short lines, no policy block); each order is offered once.
"""

from __future__ import annotations

from collections.abc import Iterable

from cds_service.contracts import INDICATOR_ORDER, CardSpec, HookInput, OverrideReasonSpec, SuggestionSpec
from hooks.discharge.rules import BONE_HEALTH, NEURO_EXAM_MISSING, DischargeFinding, describe
from hooks.orders import ORDERABLES, already_ordered, service_request

MAX_DETAIL_LINES = 8

NEURO_OVERRIDES = (
    OverrideReasonSpec("documented-elsewhere", "Neurological exam documented elsewhere (e.g. nursing notes)"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
)
BONE_OVERRIDES = (
    OverrideReasonSpec("therapy-elsewhere", "Osteoporosis therapy documented outside this EHR"),
    OverrideReasonSpec("contraindicated", "Therapy contraindicated or declined — documented"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient (e.g. non-osteoporotic indication)"),
)
_OVERRIDES = {NEURO_EXAM_MISSING: NEURO_OVERRIDES, BONE_HEALTH: BONE_OVERRIDES}


def detail_text(f: DischargeFinding, va_text: str) -> str:
    """≤ 8 short lines: the procedure and what was found, the steps, the source."""
    lines = [f"{va_text}: {' '.join(f.lines)}" if f.lines else f"{va_text}."]
    budget = MAX_DETAIL_LINES - len(lines) - 1
    lines += [f"{i}. {step}" for i, step in enumerate(f.steps[:budget], 1)]
    lines.append(f"*Source: {f.citation}.*")
    return "\n\n".join(lines)


def to_cards(findings: Iterable[DischargeFinding], inp: HookInput, va_text: str) -> list[CardSpec]:
    ordered = sorted(findings, key=lambda f: INDICATOR_ORDER[f.indicator])
    taken: set[str] = set()
    cards: list[CardSpec] = []
    for f in ordered:
        suggestions: list[SuggestionSpec] = []
        for concept in f.orders:
            if concept in taken or already_ordered(inp.facts, concept):
                continue
            taken.add(concept)
            item = ORDERABLES[concept]
            suggestions.append(
                SuggestionSpec(
                    label=item.label,
                    resources=(
                        service_request(
                            concept,
                            inp.patient_id,
                            reason=f.reason or f.summary,
                            encounter_id=inp.encounter_id,
                        ),
                    ),
                    description=f"Create a draft order: {item.display}",
                    is_recommended=concept in f.recommended,
                )
            )
        cards.append(
            CardSpec(
                rule_id=f.rule_id,
                indicator=f.indicator,
                summary=f.summary,
                detail=detail_text(f, va_text),
                citation=f.citation,
                evidence=f.evidence,
                policy_used=dict(f.policy),
                suggestions=tuple(suggestions),
                override_reasons=_OVERRIDES.get(f.rule_id),
            )
        )
    return cards


__all__ = ["describe", "to_cards"]
