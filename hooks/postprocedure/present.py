"""Post-procedure findings → cards: which stand alone, which fold, how loud, and which card orders what.

This file is the interruption budget of the post-procedure services, in one place:
- One card per problem. A pleural finding drawn from the same evidence as the embolism or hemorrhage card
  is a line of that card (V2.6/V2.12); it stands alone only for a documented pneumothorax.
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

from cds_service.contracts import INDICATOR_ORDER, CardSpec, HookInput, OverrideReasonSpec, SuggestionSpec
from hooks.orders import ORDERABLES, already_ordered, service_request
from hooks.postprocedure import rules as r
from hooks.postprocedure.rules import Order, PostFinding
from hooks.postprocedure.timing import describe_va

POST_OVERRIDES = (
    OverrideReasonSpec("already-evaluated", "Already evaluated — complication excluded or being managed"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
    OverrideReasonSpec("patient-declined", "Patient declined the work-up — documented"),
)
BONE_OVERRIDES = (
    OverrideReasonSpec("therapy-elsewhere", "Osteoporosis therapy documented outside this EHR"),
    OverrideReasonSpec("contraindicated", "Therapy contraindicated or declined — documented"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient (e.g. non-osteoporotic indication)"),
)

# Orders that are the same test for the patient: one of a group per response (a hypoxic patient's
# portable film and a 2-view film would be two chest X-rays).
ORDER_GROUP = {"chest-xray-portable": "chest-xray"}
MAX_EVIDENCE_ITEMS = 3
MAX_STEPS = 4
MAX_DETAIL_LINES = 8


def order_group(concept: str) -> str:
    return ORDER_GROUP.get(concept, concept)


def resolve_folds(findings: Sequence[PostFinding]) -> list[tuple[PostFinding, list[PostFinding]]]:
    """Standalone findings with the findings folded into each; a fold without its host stands alone."""
    hosts: dict[str, list[PostFinding]] = {f.rule_id: [] for f in findings if not f.fold_into}
    standalone: list[PostFinding] = []
    for f in findings:
        host = next((h for h in f.fold_into if h in hosts), None)
        if host is None:
            standalone.append(f)  # nothing to fold into: said on its own, never dropped
            hosts.setdefault(f.rule_id, [])
        else:
            hosts[host].append(f)
    return [(f, hosts[f.rule_id]) for f in standalone]


def adjust_loudness(
    cards: list[tuple[PostFinding, list[PostFinding]]],
) -> list[tuple[PostFinding, list[PostFinding]]]:
    """Bone health is info beside a critical card; the follow-up card only when nothing else fired."""
    critical = any(f.indicator == "critical" for f, _ in cards)
    others = any(f.rule_id != r.FOLLOWUP for f, _ in cards)
    out: list[tuple[PostFinding, list[PostFinding]]] = []
    for f, folded in cards:
        if f.rule_id == r.FOLLOWUP and others:
            continue
        if f.rule_id == r.BONE_HEALTH and critical:
            f = replace(f, indicator="info")
        out.append((f, folded))
    return out


def detail_text(f: PostFinding, folded: Sequence[PostFinding]) -> str:
    """≤ 8 short lines: the evidence in one line, folded findings, the steps, the source."""
    items = list(f.lines[:MAX_EVIDENCE_ITEMS])
    for x in folded:
        items += [line for line in x.lines if line not in items][:1]
    where = f"After the {describe_va(f.anchor)}" if f.anchor is not None else "After the VA"
    lines = [f"{where}: {'; '.join(items)}." if items else f"{where}."]
    lines += [f"Also: {x.fold_line}" for x in folded if x.fold_line][:2]
    budget = MAX_DETAIL_LINES - len(lines) - 1
    lines += [f"{i}. {step}" for i, step in enumerate(f.steps[: min(MAX_STEPS, budget)], 1)]
    lines.append(f"*Source: {f.citation}.*")
    return "\n\n".join(lines)


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
    grouped = adjust_loudness(resolve_folds(list(findings)))
    grouped.sort(key=lambda item: INDICATOR_ORDER[item[0].indicator])  # stable: rule order within a level
    taken: set[str] = set()
    cards: list[CardSpec] = []
    for f, folded in grouped:
        stat = f.indicator == "critical"
        suggestions: list[SuggestionSpec] = []
        for order in (*f.orders, *(o for x in folded for o in x.orders)):
            group = order_group(order.concept)
            if group in taken or _on_record(inp, order.concept):
                continue
            taken.add(group)
            suggestions.append(_suggestion(order, f, inp, stat))
        suggestions += [s for x in (f, *folded) for s in x.extra_suggestions]
        evidence = list(f.evidence)
        policy = dict(f.policy)
        for x in folded:
            evidence += [e for e in x.evidence if e not in evidence]
            for key, value in x.policy.items():
                policy.setdefault(f"{x.rule_id}.{key}" if key == "window_days" else key, value)
        cards.append(
            CardSpec(
                rule_id=f.rule_id,
                indicator=f.indicator,
                summary=f.summary,
                detail=detail_text(f, folded),
                citation=f.citation,
                evidence=tuple(evidence),
                policy_used=policy,
                suggestions=tuple(suggestions),
                override_reasons=None
                if f.indicator == "info"
                else (BONE_OVERRIDES if f.rule_id == r.BONE_HEALTH else POST_OVERRIDES),
            )
        )
    return cards
