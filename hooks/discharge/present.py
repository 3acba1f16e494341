"""Discharge findings → cards. Discharge cards are a checklist: info, except the missing neurological exam
and the missing bone-health plan (warning: both are to be done before the patient leaves). Text follows V2.8
(summary ≤ 140 characters, detail ≤ 8 short lines, no policy block); each order is offered once.
"""

from __future__ import annotations

from collections.abc import Iterable

from cds_service.contracts import INDICATOR_ORDER, CardSpec, HookInput, SuggestionSpec
from hooks.discharge.rules import DischargeFinding
from hooks.orders import ORDERABLES, already_ordered, service_request


def to_cards(findings: Iterable[DischargeFinding], inp: HookInput) -> list[CardSpec]:
    """One card per finding, warnings first; an order already on the record or on a card is not repeated."""
    taken: set[str] = set()
    cards: list[CardSpec] = []
    for f in sorted(findings, key=lambda f: INDICATOR_ORDER[f.indicator]):
        suggestions: list[SuggestionSpec] = []
        for concept in f.orders:
            if concept in taken or already_ordered(inp.facts, concept):
                continue
            taken.add(concept)
            item = ORDERABLES[concept]
            resource = service_request(
                concept, inp.patient_id, reason=f.reason or f.summary, encounter_id=inp.encounter_id
            )
            suggestions.append(
                SuggestionSpec(
                    label=item.label,
                    resources=(resource,),
                    description=f"Create a draft order: {item.display}",
                    is_recommended=concept in f.recommended,
                )
            )
        cards.append(CardSpec.from_finding(f, suggestions=tuple(suggestions)))
    return cards
