"""The va-discharge ServiceDefinition (encounter-discharge) and its handler.

Flow: scope (a VA in the discharged encounter or recent, patient alive) → each rule isolated → cards →
`sys.*` cards. A rule whose source failed stays silent; `sys.data-unavailable` names what was not checked.
"""

from __future__ import annotations

import logging

from cds_service.contracts import CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import data_unavailable_card
from hooks.discharge import prefetch as keys
from hooks.discharge.docs import RULE_DOCS
from hooks.discharge.present import to_cards
from hooks.discharge.rules import RULES, DischargeContext, DischargeFinding, describe
from hooks.discharge.scope import discharge_va
from hooks.policy import Policy
from hooks.postprocedure.scope import is_deceased
from hooks.postprocedure.service import check_failed_card

SERVICE_ID = "va-discharge"
HOOK = "encounter-discharge"

log = logging.getLogger(__name__)


def make_handler(policy: Policy) -> Handler:
    def handle(inp: HookInput) -> list[CardSpec]:
        unavailable = data_unavailable_card(inp, keys.CHECKS_BY_KEY)
        if keys.PROCEDURES in inp.unavailable:
            # Whether a VA is in scope is unknown: report the failure, never an all-clear checklist.
            return [unavailable] if unavailable else []
        if is_deceased(inp.facts, inp.now):
            return []
        va = discharge_va(inp, policy)
        if va is None:
            return []
        ctx = DischargeContext(inp, policy, va)
        findings: list[DischargeFinding] = []
        failed: list[str] = []
        for rule_id, sources, rule in RULES:
            if sources & inp.unavailable:
                continue
            try:
                found = rule(ctx)
            except Exception:  # one rule's unexpected data must not silence the others (V2.9)
                log.exception("discharge rule %s failed", rule_id)
                failed.append(rule_id)
                continue
            if found is not None:
                findings.append(found)
        cards = to_cards(findings, inp, f"Procedure: {describe(va)}")
        if failed:
            cards.append(check_failed_card(failed))
        if unavailable is not None:
            cards.append(unavailable)
        return cards

    return handle


def service(policy: Policy) -> ServiceDefinition:
    """The va-discharge service: the post-procedure & discharge checklist when the patient goes home."""
    return ServiceDefinition(
        id=SERVICE_ID,
        hooks=(HOOK,),
        title="Vertebral augmentation: discharge checklist",
        description=(
            "At discharge after a vertebral augmentation (in this encounter or within the last "
            f"{policy.value('discharge_recent_va_days'):g} days): neurological exam documented, red flags, "
            "procedure documentation, bone-health plan and follow-up timing."
        ),
        prefetch=dict(keys.PREFETCH),
        usage_requirements=keys.USAGE_REQUIREMENTS,
        checks_by_key=dict(keys.CHECKS_BY_KEY),
        handler=make_handler(policy),
        rules=RULE_DOCS,
    )
