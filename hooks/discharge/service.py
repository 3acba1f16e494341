"""The va-discharge ServiceDefinition (encounter-discharge) and its handler.

Flow: scope (a VA in the discharged encounter or recent, patient alive) → every rule isolated (V2.9) → cards
→ `sys.*` cards. A rule whose source failed stays silent; `sys.data-unavailable` names what was not checked.
"""

from __future__ import annotations

from cds_service.contracts import CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import check_failed_card, data_unavailable_card, run_isolated
from hooks.common.timing import is_deceased
from hooks.discharge import prefetch as keys
from hooks.discharge.docs import RULE_DOCS
from hooks.discharge.present import to_cards
from hooks.discharge.rules import RULES, DischargeContext
from hooks.discharge.scope import discharge_va
from hooks.policy import Policy

SERVICE_ID = "va-discharge"
HOOK = "encounter-discharge"
_RULE_TITLES = {d.rule_id: d.title for d in RULE_DOCS}


def make_handler(policy: Policy) -> Handler:
    def handle(inp: HookInput) -> list[CardSpec]:
        unavailable = data_unavailable_card(inp, keys.CHECKS_BY_KEY)
        if keys.PROCEDURES in inp.unavailable:
            # Whether a VA is in scope is unknown: report the failure, never an all-clear checklist.
            return [unavailable] if unavailable else []
        if is_deceased(inp.facts, inp.now):
            return []  # V2.4
        va = discharge_va(inp, policy)
        if va is None:
            return []
        # A rule whose source failed stays silent: its "nothing found" would be unknown, not absent.
        rules = [(rule_id, rule) for rule_id, sources, rule in RULES if not sources & inp.unavailable]
        findings, failed = run_isolated(rules, DischargeContext(inp, policy, va))
        cards = to_cards(findings, inp)
        failed_card = check_failed_card(failed, _RULE_TITLES)
        if failed_card is not None:
            cards.append(failed_card)
        if unavailable is not None:
            cards.append(unavailable)
        return cards

    return handle


def services(policy: Policy) -> list[ServiceDefinition]:
    """The va-discharge service (one hook): the post-procedure & discharge checklist at discharge."""
    return [
        ServiceDefinition(
            id=SERVICE_ID,
            hook=HOOK,
            title="Vertebral augmentation: discharge checklist",
            description=(
                "At discharge after a vertebral augmentation (in this encounter or within the last "
                f"{policy.value('discharge_recent_va_days'):g} days): neurological exam documented, red "
                "flags, procedure documentation, bone-health plan and follow-up timing."
            ),
            prefetch=dict(keys.PREFETCH),
            usage_requirements=keys.USAGE_REQUIREMENTS,
            checks_by_key=dict(keys.CHECKS_BY_KEY),
            handler=make_handler(policy),
            rules=RULE_DOCS,
        )
    ]
