"""Post-procedure findings → cards: which stand alone, which fold, how loud, and which card orders what.

This file is the interruption budget of the post-procedure services, in one place:
- One card per problem. A pleural finding drawn from the same evidence as the embolism or hemorrhage card
  is folded into that card (V2.6/V2.12: `CardSpec.folded`, listed in `org.va-cds.findings`); it stands
  alone only for a documented pneumothorax. A finding whose host did not fire stands alone (never dropped).
- `post.bone-health.untreated` is info while a critical post-procedure card is in the response (V2.12).
- `post.followup` appears only when no other post-procedure card does.
- Each order is suggested once per response, on the most severe card that asks for it; work-up offered by a
  critical card is `stat` (V2.7). Orders already drafted or active on the record are not offered again.
- Card text (V2.8): summary ≤ 140 characters, detail ≤ 8 short lines; the policy values travel in
  `org.va-cds.policy`, never in the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from cds_service.contracts import INDICATOR_ORDER, CardSpec, HookInput, Indicator, SuggestionSpec
from hooks.orders import ORDERABLES, already_ordered, service_request
from hooks.postprocedure import rules as r
from hooks.postprocedure.context import MAX_DETAIL_LINES, MAX_STEPS, Order, PostFinding, compose_detail

# Orders that are the same test for the patient: one of a group per response (a hypoxic patient's
# portable film and a 2-view film would be two chest X-rays).
ORDER_GROUP = {"chest-xray-portable": "chest-xray"}

Grouped = list[tuple[PostFinding, list[PostFinding]]]


def order_group(concept: str) -> str:
    return ORDER_GROUP.get(concept, concept)


def resolve_folds(findings: Sequence[PostFinding]) -> Grouped:
    """Standalone findings with the findings folded into each; a fold without its host stands alone."""
    hosts: dict[str, list[PostFinding]] = {f.rule_id: [] for f in findings if not f.fold_into}
    standalone: list[PostFinding] = []
    for f in findings:
        host = next((h for h in f.fold_into if h in hosts), None)
        if host is None:
            standalone.append(f)
            hosts.setdefault(f.rule_id, [])
        else:
            hosts[host].append(f)
    return [(f, hosts[f.rule_id]) for f in standalone]


def loudness(f: PostFinding, grouped: Grouped) -> Indicator:
    """The indicator a finding's card gets in this response (bone health yields to a critical card)."""
    if f.rule_id == r.BONE_HEALTH and any(g.indicator == "critical" for g, _ in grouped):
        return "info"
    return f.indicator


def _suggestion(order: Order, f: PostFinding, inp: HookInput, stat: bool) -> SuggestionSpec:
    item = ORDERABLES[order.concept]
    resource = service_request(
        order.concept,
        inp.patient_id,
        reason=f.reason or f.summary,
        encounter_id=inp.encounter_id,
        note=order.note,
        priority="stat" if stat else None,
    )
    label = order.label or item.label
    return SuggestionSpec(
        label=f"{label} (STAT)" if stat else label,
        resources=(resource,),
        description=f"Create a draft order{' (stat)' if stat else ''}: {item.display}"
        + (f". {order.note}" if order.note else ""),
        is_recommended=order.recommended,
    )


def _on_record(inp: HookInput, concept: str) -> bool:
    return already_ordered(inp.facts, concept) or already_ordered(inp.facts, order_group(concept))


def to_cards(findings: Iterable[PostFinding], inp: HookInput) -> list[CardSpec]:
    """The post-procedure cards for one response, most severe first, each order on one card only."""
    grouped = resolve_folds(list(findings))
    if any(f.rule_id != r.FOLLOWUP for f, _ in grouped):
        grouped = [(f, x) for f, x in grouped if f.rule_id != r.FOLLOWUP]
    levels = {f.rule_id: loudness(f, grouped) for f, _ in grouped}
    grouped.sort(key=lambda item: INDICATOR_ORDER[levels[item[0].rule_id]])  # stable within a level
    taken: set[str] = set()
    cards: list[CardSpec] = []
    for f, folded in grouped:
        indicator = levels[f.rule_id]
        stat = indicator == "critical"
        suggestions: list[SuggestionSpec] = []
        for order in (*f.orders, *(o for x in folded for o in x.orders)):
            group = order_group(order.concept)
            if group in taken or _on_record(inp, order.concept):
                continue
            taken.add(group)
            suggestions.append(_suggestion(order, f, inp, stat))
        suggestions += [s for x in (f, *folded) for s in x.extra_suggestions]
        # Lines: evidence, steps, "**Also:**" + one per fold, and the core's source line.
        fold_lines = 1 + len(folded) if folded else 0
        budget = min(MAX_STEPS, MAX_DETAIL_LINES - 2 - fold_lines)
        policy = dict(f.policy_used)
        for x in folded:
            for key, value in x.policy_used.items():
                policy.setdefault(f"{x.rule_id}.{key}" if key == "window_days" else key, value)
        card = CardSpec.from_finding(
            f,
            folded=tuple(folded),
            indicator=indicator,
            detail=compose_detail(f.anchor, f.lines, f.steps, budget),
            suggestions=tuple(suggestions),
        )
        cards.append(replace(card, policy_used=policy))
    return cards
