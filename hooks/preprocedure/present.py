"""Findings → cards for the pre-procedure services: the interruption budget in one file (catalog V2.2).

- `FOLD_INTO`: a finding that belongs to another card folds into it when that card fires (one card per
  problem: the more specific rule is the card, V2.8 and V2.12).
- `CHECKLIST_ONLY`: work-up and context findings that are always items of the `pre.checklist` card.
- Any finding a rule proposes at *info* is folded too: into its host when `INFO_FOLDS_INTO` names one that
  fired (an INR explained by warfarin → the antithrombotic card), else into the checklist.
- Everything else stands alone, at the indicator its rule proposed (raised to the loudest finding it carries).

On ordinary charts this leaves a VA order with at most one interruptive card; the checklist card is info
unless the procedure is imminent with a work-up row still open.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from dataclasses import replace

from cds_service.contracts import INDICATOR_ORDER, CardSpec, Finding, HookInput, SuggestionSpec
from hooks.common import run_isolated
from hooks.policy import Policy
from hooks.preprocedure import rules as r
from hooks.preprocedure import workup as w
from hooks.preprocedure.checklist import ChecklistItem, checklist_finding, checklist_rows
from hooks.preprocedure.scope import scope_of

FOLD_INTO: dict[str, str] = {
    r.INFECTION_HISTORY: r.INFECTION_ACTIVE,
    r.INFECTION_LABS: r.INFECTION_ACTIVE,
    r.COAGULOPATHY: r.LABS_OUT_OF_RANGE,
    r.POSTERIOR_WALL: r.NEURO_RED_FLAGS,
}
INFO_FOLDS_INTO: dict[str, str] = {r.LABS_OUT_OF_RANGE: r.ANTITHROMBOTIC_ACTIVE}
CHECKLIST_ONLY = frozenset(
    {r.LABS_MISSING, r.SCREEN_MISSING, r.CONCORDANCE_MISSING, r.RISK_FACTORS, r.SEDATION}
)

# Order: how a clinician reads them when the core sorts within an indicator level (stable sort).
FULL_RULES: tuple[tuple[str, r.Rule], ...] = (
    (r.NEURO_RED_FLAGS, r.neuro_red_flags),
    (r.INFECTION_ACTIVE, r.infection_active),
    (r.LABS_OUT_OF_RANGE, r.labs_out_of_range),
    (r.ALLERGY_CEMENT, r.allergy_cement),
    (r.COAGULOPATHY, r.coagulopathy),
    (r.ANTITHROMBOTIC_ACTIVE, r.antithrombotic_active),
    (r.INFECTION_LABS, r.infection_labs_abnormal),
    (r.INFECTION_HISTORY, r.infection_history),
    (r.POSTERIOR_WALL, r.posterior_wall),
    (r.CONCORDANCE_DISCORDANT, r.concordance_discordant),
    (r.ALLERGY_CONTRAST, r.allergy_contrast),
    (r.GLYCEMIC, r.glycemic),
    (r.LABS_MISSING, w.labs_missing),
    (r.SCREEN_MISSING, w.screen_missing),
    (r.CONCORDANCE_MISSING, w.concordance_missing),
    (r.SEDATION, r.sedation_cardiopulmonary),
    (r.RISK_FACTORS, r.risk_factors),
)
# On the antithrombotic-order path only the hold-window rule runs (V2.12), with sys.* from the handler.
ORDER_ONLY_RULES: tuple[tuple[str, r.Rule], ...] = (
    (r.ORDER_WHILE_PLANNED, r.antithrombotic_order_while_planned),
)


def _merged(host: Finding, folded: list[Finding]) -> tuple[SuggestionSpec, ...]:
    seen: set[str] = set()
    out: list[SuggestionSpec] = []
    for s in (*host.suggestions, *(s for f in folded for s in f.suggestions)):
        key = s.description.split(", priority")[0]
        if key not in seen:
            seen.add(key)
            out.append(s)
    return tuple(out)


def host_of(finding: Finding, fired: dict[str, Finding]) -> str | None:
    """Where a finding folds: another card's rule id, CHECKLIST, or None when it stands alone."""
    host = (
        INFO_FOLDS_INTO.get(finding.rule_id)
        if finding.indicator == "info"
        else FOLD_INTO.get(finding.rule_id)
    )
    if host is not None and host in fired and fired[host].indicator != "info":
        return host
    if finding.rule_id in CHECKLIST_ONLY or finding.indicator == "info":
        return r.CHECKLIST
    return None


def present(c: r.RuleContext, findings: list[Finding], failed: list[str]) -> list[CardSpec]:
    """The cards of one full readiness review: standalone cards with their folds, then the checklist card."""
    fired = {f.rule_id: f for f in findings}
    folded: dict[str, list[Finding]] = defaultdict(list)
    standalone: list[Finding] = []
    for f in findings:
        host = host_of(f, fired)
        if host is None:
            standalone.append(f)
        else:
            folded[host].append(f)
    cards = []
    for f in standalone:
        carried = folded[f.rule_id]
        loudest = min([f.indicator, *(x.indicator for x in carried)], key=INDICATOR_ORDER.__getitem__)
        cards.append(
            CardSpec.from_finding(
                f, folded=tuple(carried), indicator=loudest, suggestions=_merged(f, carried)
            )
        )
    work = w.workup(c)
    rows = checklist_rows(c, fired, failed, work)
    _remember(c.inp, rows)
    checklist = checklist_finding(c, rows, work)
    items = folded[r.CHECKLIST]
    context = [f"- {f.line or f.summary}" for f in items if f.rule_id not in w.MISSING_RULES]
    card = CardSpec.from_finding(
        checklist, detail="\n".join([checklist.detail, *context]) if context else None
    )
    cards.append(replace(card, folded=tuple(items)))
    return cards


def evaluate(c: r.RuleContext) -> tuple[list[Finding], list[str]]:
    """Every full-review rule, isolated (V2.9)."""
    return run_isolated(FULL_RULES, c)


# The rows of the last few calls, by the identity of their HookInput: the core attaches the checklist link
# right after the handler ran, and this saves running every rule a second time on the response path.
_RECENT_ROWS: OrderedDict[int, tuple[HookInput, list[ChecklistItem]]] = OrderedDict()
_RECENT_MAX = 64
_recent_lock = threading.Lock()


def _remember(inp: HookInput, rows: list[ChecklistItem]) -> None:
    with _recent_lock:
        _RECENT_ROWS[id(inp)] = (inp, rows)
        while len(_RECENT_ROWS) > _RECENT_MAX:
            _RECENT_ROWS.popitem(last=False)


def checklist_items(inp: HookInput, policy: Policy) -> list[ChecklistItem]:
    """The checklist rows for one hook input, as the checklist page shows them (empty when out of scope)."""
    with _recent_lock:
        seen = _RECENT_ROWS.pop(id(inp), None)
    if seen is not None and seen[0] is inp:  # the same call, not an object that reused its id
        return seen[1]
    scope = scope_of(inp.hook, inp.facts)
    if scope.mode != "full" or r.is_deceased(inp):
        return []
    c = r.make_context(inp, policy, scope)
    findings, failed = evaluate(c)
    return checklist_rows(c, {f.rule_id: f for f in findings}, failed, w.workup(c))
