"""The post-procedure ServiceDefinitions (one hook each, catalog V2.1) and their shared handler.

Flow: scope (a VA within the look-back, patient alive) → facts → each rule isolated (`rules.RULES`) →
`present.to_cards` (folding, loudness, one order per response) → `sys.*` cards.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from cds_service.contracts import CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import data_unavailable_card
from hooks.policy import Policy
from hooks.postprocedure import prefetch as keys
from hooks.postprocedure.docs import RULE_DOCS
from hooks.postprocedure.present import to_cards
from hooks.postprocedure.rules import BONE_HEALTH, RULES, PostFinding, RuleContext, followup
from hooks.postprocedure.scope import is_deceased, latest_va_in_lookback
from hooks.postprocedure.timing import VaTimeline

ENCOUNTER_START_ID = "va-postprocedure-encounter-start"
PATIENT_VIEW_ID = "va-postprocedure-patient-view"
SERVICE_IDS = (ENCOUNTER_START_ID, PATIENT_VIEW_ID)
CHECK_FAILED = "sys.check-failed"

log = logging.getLogger(__name__)


def findings_for(inp: HookInput, policy: Policy) -> tuple[list[PostFinding], list[str]] | None:
    """Every finding for one call and the checks that failed; None when the services do not apply."""
    if is_deceased(inp.facts, inp.now):
        return None
    timeline = VaTimeline.from_facts(inp.facts, inp.now)
    if latest_va_in_lookback(timeline, inp.now, policy) is None:
        return None
    ctx = RuleContext(inp.facts, inp.now, inp.patient_id, policy, timeline, inp.unavailable)
    findings: list[PostFinding] = []
    failed: list[str] = []
    for name, rule in RULES:
        if name == BONE_HEALTH and keys.BONE_SOURCES & inp.unavailable:
            continue  # "no therapy found" from a failed source is unknown, not absent
        try:
            found = rule(ctx)
        except Exception:  # one rule's unexpected data must not silence the others (V2.9)
            log.exception("post-procedure rule %s failed", name)
            failed.append(name)
            continue
        if found is not None:
            findings.append(found)
    fu = followup(ctx)
    if fu is not None:
        if inp.unavailable & set(keys.CHECKS_BY_KEY):
            # Nothing fired, but not everything could be checked: the reminder must not read as an all-clear.
            note = "some checks could not run (see the data-unavailable card): not an all-clear"
            fu = replace(fu, lines=(*fu.lines, note))
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
        if failed:
            cards.append(check_failed_card(failed))
        if unavailable is not None:
            cards.append(unavailable)
        return cards

    return handle


def check_failed_card(checks: list[str]) -> CardSpec:
    names = ", ".join(checks)
    return CardSpec(
        rule_id=CHECK_FAILED,
        indicator="warning",
        summary=f"A safety check could not complete ({names}): review the chart for it",
        detail=f"These checks stopped on unexpected data and did not judge the chart: {names}. "
        "The other checks ran. Review these items manually.",
        citation="va-cds rule catalog V2.9 (a failing check is a finding)",
        policy_used={"checks": checks},
    )


def _definition(service_id: str, hook: str, policy: Policy, title: str) -> ServiceDefinition:
    return ServiceDefinition(
        id=service_id,
        hooks=(hook,),
        title=title,
        description=(
            "For patients with a vertebral augmentation (vertebroplasty/kyphoplasty) in the last "
            f"{policy.value('post_lookback_days'):g} days: flags possible cement embolism, neurological "
            "deficit, infection, hemorrhage, pleural injury, increased or severe pain, new fractures, "
            "hypersensitivity reactions and untreated osteoporosis, each with its work-up once."
        ),
        prefetch=dict(keys.PREFETCH),
        usage_requirements=keys.USAGE_REQUIREMENTS,
        checks_by_key=dict(keys.CHECKS_BY_KEY),
        handler=make_handler(policy),
        rules=RULE_DOCS,
    )


def services(policy: Policy) -> list[ServiceDefinition]:
    """The post-procedure services: one per hook (V2.1), sharing rules and handler."""
    return [
        _definition(
            ENCOUNTER_START_ID,
            "encounter-start",
            policy,
            "Vertebral augmentation: complication watch when the patient arrives",
        ),
        _definition(
            PATIENT_VIEW_ID,
            "patient-view",
            policy,
            "Vertebral augmentation: complication watch when the chart is opened",
        ),
    ]
