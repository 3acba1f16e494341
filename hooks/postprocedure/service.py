"""The post-procedure ServiceDefinitions (one hook each, catalog V2.1) and their shared handler.

Flow: scope (a VA within the look-back, patient alive) → facts → every rule isolated (`rules.RULES`, V2.9) →
`present.to_cards` (folding, loudness, one order per response) → `sys.*` cards.
"""

from __future__ import annotations

from cds_service.contracts import CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import check_failed_card, data_unavailable_card, run_isolated
from hooks.common.timing import VaTimeline, is_deceased
from hooks.policy import Policy
from hooks.postprocedure import prefetch as keys
from hooks.postprocedure.context import PostFinding, RuleContext, with_note
from hooks.postprocedure.docs import RULE_DOCS
from hooks.postprocedure.present import to_cards
from hooks.postprocedure.rules import BONE_HEALTH, RULES, followup
from hooks.postprocedure.scope import latest_va_in_lookback

SERVICE_IDS: dict[str, str] = {  # one id per hook (catalog V2.1)
    "encounter-start": "va-postprocedure-encounter-start",
    "patient-view": "va-postprocedure-patient-view",
}
_TITLES = {
    "encounter-start": "Vertebral augmentation: complication watch when the patient arrives",
    "patient-view": "Vertebral augmentation: complication watch when the chart is opened",
}
_RULE_TITLES = {d.rule_id: d.title for d in RULE_DOCS}


def findings_for(inp: HookInput, policy: Policy) -> tuple[list[PostFinding], list[str]] | None:
    """Every finding for one call and the checks that failed; None when the services do not apply."""
    if is_deceased(inp.facts, inp.now):
        return None  # V2.4: no cards for a patient the record says has died
    timeline = VaTimeline.from_facts(inp.facts, inp.now)
    if latest_va_in_lookback(timeline, inp.now, policy) is None:
        return None
    ctx = RuleContext(inp.facts, inp.now, inp.patient_id, policy, timeline, inp.unavailable)
    # "No therapy found" (or "no cancer on record") from a failed source is unknown, not absent.
    rules = [
        (rid, rule) for rid, rule in RULES if not (rid == BONE_HEALTH and keys.BONE_SOURCES & inp.unavailable)
    ]
    findings, failed = run_isolated(rules, ctx)
    fu = followup(ctx)
    if fu is not None:
        if inp.unavailable & set(keys.CHECKS_BY_KEY):
            # Nothing fired, but not everything could be checked: the reminder must not read as an all-clear.
            fu = with_note(fu, "some checks could not run (see the data-unavailable card): not an all-clear")
        findings.append(fu)
    return findings, failed


def make_handler(policy: Policy) -> Handler:
    def handle(inp: HookInput) -> list[CardSpec]:
        unavailable = data_unavailable_card(inp, keys.CHECKS_BY_KEY)
        if keys.PROCEDURES in inp.unavailable:
            # Without the procedure list we cannot know whether a VA is in scope: say so, never an all-clear.
            return [unavailable] if unavailable else []
        result = findings_for(inp, policy)
        if result is None:
            return []
        findings, failed = result
        cards = to_cards(findings, inp)
        failed_card = check_failed_card(failed, _RULE_TITLES)
        if failed_card is not None:
            cards.append(failed_card)
        if unavailable is not None:
            cards.append(unavailable)
        return cards

    return handle


def services(policy: Policy) -> list[ServiceDefinition]:
    """The post-procedure services: one per hook (V2.1), sharing one handler and one set of rules."""
    handler = make_handler(policy)
    return [
        ServiceDefinition(
            id=service_id,
            hook=hook,
            title=_TITLES[hook],
            description=(
                "For patients with a vertebral augmentation (vertebroplasty/kyphoplasty) in the last "
                f"{policy.value('post_lookback_days'):g} days: flags possible cement embolism, neurological "
                "deficit, infection, hemorrhage, pleural injury, increased or severe pain, new fractures, "
                "hypersensitivity reactions and untreated osteoporosis, each with its work-up once."
            ),
            prefetch=dict(keys.PREFETCH),
            usage_requirements=keys.USAGE_REQUIREMENTS,
            checks_by_key=dict(keys.CHECKS_BY_KEY),
            handler=handler,
            rules=RULE_DOCS,
        )
        for hook, service_id in SERVICE_IDS.items()
    ]
