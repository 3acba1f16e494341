"""Card helpers every family uses: the data-unavailable card, order suggestions, dates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from cds_service.contracts import CORE_CHECKS_BY_KEY, CardSpec, HookInput, SuggestionSpec
from hooks.orders import ORDERABLES, missing_orders, service_request

DATA_UNAVAILABLE = "sys.data-unavailable"


def fmt_date(when: datetime | None) -> str:
    return when.date().isoformat() if when else "date unknown"


def order_suggestions(
    inp: HookInput,
    concepts: Iterable[str],
    *,
    reason: str,
    recommended: Iterable[str] = (),
    priority: str | None = None,
) -> tuple[SuggestionSpec, ...]:
    """One suggestion per orderable concept not already drafted or active (no alert loop on re-sign).

    `priority="stat"` marks the work-up of a critical card (catalog V2.7).
    """
    wanted = set(recommended)
    out: list[SuggestionSpec] = []
    for concept in missing_orders(inp.facts, concepts):
        item = ORDERABLES[concept]
        resource = service_request(
            concept, inp.patient_id, reason=reason, encounter_id=inp.encounter_id, priority=priority
        )
        out.append(
            SuggestionSpec(
                label=item.label + (" (stat)" if priority == "stat" else ""),
                resources=(resource,),
                description=f"Create a draft order: {item.display}"
                + (", priority stat" if priority == "stat" else ""),
                is_recommended=concept in wanted,
            )
        )
    return tuple(out)


def data_unavailable_card(inp: HookInput, checks_by_key: Mapping[str, tuple[str, ...]]) -> CardSpec | None:
    """`sys.data-unavailable` (warning) naming the checks that could not run, or None when nothing failed.

    A failed source means the data is unknown, not missing: the rules fed by it stay silent rather than
    claiming either a problem or an all-clear, and this card says so.
    """
    # Sources the core adds for every family (Medications fetched for unresolved references, V2.4).
    checks_by_key = {**CORE_CHECKS_BY_KEY, **checks_by_key}
    failed = sorted(k for k in inp.unavailable if k in checks_by_key)
    if not failed:
        return None
    checks: list[str] = []
    for key in failed:
        for check in checks_by_key[key]:
            if check not in checks:
                checks.append(check)
    lines = "\n".join(f"- {c}" for c in checks)
    keys = ", ".join(f"`{k}`" for k in failed)
    return CardSpec(
        rule_id=DATA_UNAVAILABLE,
        indicator="warning",
        summary=f"Some safety checks could not run: {len(checks)} check(s) lack data from the EHR",
        detail=(
            "The EHR's FHIR server did not return some of the data these checks need (error, timeout or "
            f"OperationOutcome for {keys}). **These checks were not performed — absence of a warning is not "
            f"an all-clear:**\n\n{lines}\n\nReview the chart manually or retry once the FHIR server responds."
        ),
        citation="va-cds rule catalog, system rule sys.data-unavailable",
        policy_used={"unavailable_sources": failed},
    )
