"""The va-preprocedure service definition and its handler.

Scope (rule catalog): order hooks fire when draftOrders hold a VA request (full readiness review), or when a
VA is already planned and an antithrombotic is being ordered (only the hold-window rule, no checklist);
patient-view fires when a VA is planned. Anything else answers `{"cards": []}`.
"""

from __future__ import annotations

from cds_service.contracts import CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import data_unavailable_card
from hooks.policy import Policy
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure.checklist import checklist_card
from hooks.preprocedure.docs import RULE_DOCS
from hooks.preprocedure.rules import FULL_RULES, ORDER_ONLY_RULES, make_context
from hooks.preprocedure.scope import ORDER_HOOKS, quick_scope, scope_of

SERVICE_ID = "va-preprocedure"
HOOKS = ("order-select", "order-sign", "patient-view")
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
        cards = [card for _, rule in rules if (card := rule(ctx)) is not None]
        if scope.mode == "full":
            cards.append(checklist_card(inp, [c.rule_id for c in cards]))
            unavailable = data_unavailable_card(inp, keys.CHECKS_BY_KEY)
        else:
            relevant = (*_PLANNED_KEYS, keys.RENAL_LABS, keys.WEIGHT, keys.PATIENT)
            unavailable = data_unavailable_card(inp, {k: keys.CHECKS_BY_KEY[k] for k in relevant})
        if unavailable is not None:
            cards.append(unavailable)
        return cards

    return handle


def service(policy: Policy) -> ServiceDefinition:
    """The va-preprocedure service: pre-procedure safety checklist as cards on order and chart hooks."""
    return ServiceDefinition(
        id=SERVICE_ID,
        hooks=HOOKS,
        title="Vertebral augmentation: pre-procedure safety check",
        description=(
            "When a vertebroplasty or kyphoplasty is ordered (or is planned and the chart is opened), checks "
            "anticoagulation and coagulation labs, infection, fracture acuity and imaging concordance, "
            "neurological red flags, contrast and bone-cement allergy, sedation risk and glycaemic control, "
            "and shows the pre-procedure checklist with the orders that close each gap. Also warns when an "
            "anticoagulant or antiplatelet is ordered inside its hold period before a planned procedure."
        ),
        prefetch=dict(keys.PREFETCH),
        usage_requirements=keys.USAGE_REQUIREMENTS,
        checks_by_key=dict(keys.CHECKS_BY_KEY),
        handler=make_handler(policy),
        quick_scope=quick_scope,
        rules=RULE_DOCS,
    )
