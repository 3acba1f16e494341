"""The pre-procedure service definitions (one per hook, catalog V2.1) and their shared handler.

Scope (rule catalog): order hooks fire when draftOrders hold a VA request (full readiness review), or when a
VA is already planned and an antithrombotic is being ordered (only the hold-window rule and `sys.*`, V2.12);
patient-view fires when a VA is planned. A patient the record says is deceased gets no cards, except one
identity-check card on the order hooks (V2.12). Anything else answers `{"cards": []}`.
"""

from __future__ import annotations

from cds_service.contracts import MEDICATION_REFS_KEY, CardSpec, Handler, HookInput, ServiceDefinition
from hooks.common import check_failed_card, data_unavailable_card, run_isolated
from hooks.policy import Policy
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure import rules as r
from hooks.preprocedure.docs import RULE_DOCS
from hooks.preprocedure.present import ORDER_ONLY_RULES, evaluate, present
from hooks.preprocedure.scope import ORDER_HOOKS, quick_scope, scope_of

_PLANNED_KEYS = (keys.SERVICE_REQUESTS, keys.APPOINTMENTS)
_TITLES_BY_RULE = {d.rule_id: d.title for d in RULE_DOCS}


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
        ctx = r.make_context(inp, policy, scope)
        if r.is_deceased(inp):
            found = r.deceased(ctx)
            return [CardSpec.from_finding(found)] if found and inp.hook in ORDER_HOOKS else []
        if scope.mode == "full":
            findings, failed = evaluate(ctx)  # V2.9: one failing rule never hides the others
            batches, more_failed = run_isolated([(r.CHECKLIST, lambda c: present(c, findings, failed))], ctx)
            cards: list[CardSpec] = [card for batch in batches for card in batch]
            failed = failed + more_failed
            unavailable = data_unavailable_card(inp, keys.CHECKS_BY_KEY)
        else:
            findings, failed = run_isolated(ORDER_ONLY_RULES, ctx)
            cards = [CardSpec.from_finding(f) for f in findings]
            relevant = (*_PLANNED_KEYS, keys.RENAL_LABS, keys.WEIGHT, keys.PATIENT, MEDICATION_REFS_KEY)
            unavailable = data_unavailable_card(inp, {k: keys.CHECKS_BY_KEY[k] for k in relevant})
        if unavailable is not None:
            cards.append(unavailable)
        failed_card = check_failed_card(failed, _TITLES_BY_RULE)
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
    "bleeding disorders, infection, fracture acuity and imaging concordance, new neurological deficits and "
    "posterior wall involvement, contrast and bone-cement allergy, and glycaemic control, timed against the "
    "planned procedure date; the open work-up is one checklist card with the orders that close it. Also "
    "warns when an anticoagulant or antiplatelet is ordered inside its hold period before a planned "
    "procedure."
)
_VIEW_DESCRIPTION = (
    "When the chart of a patient with a planned vertebroplasty or kyphoplasty is opened: the same "
    "pre-procedure readiness review, timed against the booked date, and the checklist."
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
