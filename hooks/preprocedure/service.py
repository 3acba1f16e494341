"""The va-preprocedure service definition and its handler.

Scope (rule catalog): order hooks fire when draftOrders hold a VA request (full readiness review), or when a
VA is already planned and an antithrombotic is being ordered (only the hold-window rule, no checklist);
patient-view fires when a VA is planned. Anything else answers `{"cards": []}`.
"""

from __future__ import annotations

from cds_service.contracts import CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import check_failed_card, data_unavailable_card, run_isolated
from hooks.policy import Policy
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure.checklist import checklist_card
from hooks.preprocedure.docs import RULE_DOCS
from hooks.preprocedure.rules import FULL_RULES, ORDER_ONLY_RULES, make_context
from hooks.preprocedure.scope import ORDER_HOOKS, quick_scope, scope_of

_PLANNED_KEYS = (keys.SERVICE_REQUESTS, keys.APPOINTMENTS)


def make_handler(policy: Policy) -> Handler:
    def handle(inp: HookInput) -> list[CardSpec]:
        scope = scope_of(inp.hook, inp.facts)
        if scope.mode == "none":
            if inp.hook in ORDER_HOOKS and scope.drafted_antithrombotics:
                # We cannot tell whether a VA is planned inside this drug's hold window: say so rather than
                # stay silent. (patient-view stays quiet: no VA is known, so no readiness review is due.)
                card = data_unavailable_card(inp, {k: keys.CHECKS_BY_KEY[k] for k in _PLANNED_KEYS})
                return [card] if card else []
            return []
        ctx = make_context(inp, policy, scope)
        rules = FULL_RULES if scope.mode == "full" else ORDER_ONLY_RULES
        cards, failed = run_isolated(rules, ctx)  # V2.9: one failing rule never hides the others
        if scope.mode == "full":
            cards.append(checklist_card(inp, [c.rule_id for c in cards]))
            unavailable = data_unavailable_card(inp, keys.CHECKS_BY_KEY)
        else:
            relevant = (*_PLANNED_KEYS, keys.RENAL_LABS, keys.WEIGHT, keys.PATIENT)
            unavailable = data_unavailable_card(inp, {k: keys.CHECKS_BY_KEY[k] for k in relevant})
        if unavailable is not None:
            cards.append(unavailable)
        failed_card = check_failed_card(failed)
        if failed_card is not None:
            cards.append(failed_card)
        return cards

    return handle


# One service id per hook (catalog V2.1): the sandbox and EHRs that register one URL per hook keep only the
# last hook of an id listed under several, silently.
SERVICE_IDS: dict[str, str] = {
    "order-sign": "va-preprocedure-order-sign",
    "order-select": "va-preprocedure-order-select",
    "patient-view": "va-preprocedure-patient-view",
}
_TITLES = {
    "order-sign": "Vertebral augmentation: pre-procedure safety check (order sign)",
    "order-select": "Vertebral augmentation: pre-procedure safety check (order select)",
    "patient-view": "Vertebral augmentation: pre-procedure readiness (chart open)",
}
_ORDER_DESCRIPTION = (
    "When a vertebroplasty or kyphoplasty is ordered, checks anticoagulation and coagulation labs, "
    "infection, fracture acuity and imaging concordance, neurological red flags, contrast and bone-cement"
    " allergy, sedation risk and glycaemic control, and shows the pre-procedure checklist with the orders"
    " that close each gap. Also warns when an anticoagulant or antiplatelet is ordered inside its hold "
    "period before a planned procedure."
)
_VIEW_DESCRIPTION = (
    "When the chart of a patient with a planned vertebroplasty or kyphoplasty is opened: the same "
    "pre-procedure readiness review (anticoagulation, coagulation labs, infection, imaging concordance, "
    "neurological red flags, allergies, sedation risk, glycaemic control) and the checklist."
)


def services(policy: Policy) -> list[ServiceDefinition]:
    """The pre-procedure services, one per hook, sharing one handler and one set of rules."""
    handler = make_handler(policy)
    return [
        ServiceDefinition(
            id=service_id,
            hook=hook,
            title=_TITLES[hook],
            description=_VIEW_DESCRIPTION if hook == "patient-view" else _ORDER_DESCRIPTION,
            prefetch=dict(keys.PREFETCH),
            usage_requirements=keys.USAGE_REQUIREMENTS,
            checks_by_key=dict(keys.CHECKS_BY_KEY),
            handler=handler,
            quick_scope=quick_scope,
            rules=RULE_DOCS,
        )
        for hook, service_id in SERVICE_IDS.items()
    ]
