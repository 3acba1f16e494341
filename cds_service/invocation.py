"""One hook call, end to end and free of HTTP: prefetch → facts → rules → cards.

The app (and the offline `va-cds evaluate` command) call `invoke`; it never raises for bad clinical data:
a rule that fails is logged and reported as checks that could not run, never as an all-clear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from cds_service.cards import build_cards
from cds_service.contracts import MEDICATION_REFS_KEY, CardSpec, HookInput, ServiceDefinition
from cds_service.fhir_client import FhirPool
from cds_service.medication_refs import fetch_medications
from cds_service.models import Card, HookRequest
from cds_service.prefetch import FetchLimits, KeyOutcome, resolve
from fhir_mappings.extract import extract_facts
from fhir_mappings.library import ValueSetLibrary

log = logging.getLogger("va_cds.invocation")


@dataclass(slots=True)
class InvocationResult:
    cards: list[Card]
    outcomes: dict[str, KeyOutcome] = field(default_factory=dict)
    skipped: bool = False  # the service did not apply (answered before any data was read)
    hook_input: HookInput | None = None  # what the rules saw (for the checklist page); None when skipped
    specs: list[CardSpec] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def rule_ids(self) -> list[str]:
        return [str((c.extension or {}).get("org.va-cds.rule")) for c in self.cards]


def draft_order_resources(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    orders = context.get("draftOrders")
    if not isinstance(orders, dict) or not isinstance(orders.get("entry"), list):
        return []
    return [
        e["resource"] for e in orders["entry"] if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _internal_error_card() -> CardSpec:
    # Last resort: families isolate each rule (V2.9), so this fires only when the service itself failed.
    return CardSpec(
        rule_id="sys.check-failed",
        indicator="warning",
        summary="va-cds could not complete its safety checks for this patient",
        detail=(
            "An internal error stopped the rules from running. **No checks were performed — the absence of "
            "other warnings is not an all-clear.** Review the chart manually; the error was logged for the "
            "va-cds team."
        ),
        citation="va-cds rule catalog V2.9, system rule sys.check-failed",
    )


def evaluate(
    service: ServiceDefinition,
    req: HookRequest,
    resources: Iterable[Mapping[str, Any]],
    unavailable: frozenset[str],
    now: datetime,
    library: ValueSetLibrary | None,
) -> list[CardSpec]:
    """Facts from the resources, then the service's rules (guarded: a rule crash is never silence)."""
    return evaluate_with_input(service, req, resources, unavailable, now, library)[0]


def evaluate_with_input(
    service: ServiceDefinition,
    req: HookRequest,
    resources: Iterable[Mapping[str, Any]],
    unavailable: frozenset[str],
    now: datetime,
    library: ValueSetLibrary | None,
) -> tuple[list[CardSpec], HookInput | None]:
    """As `evaluate`, also returning the HookInput the rules saw (None if facts could not be built)."""
    ctx = req.context
    inp: HookInput | None = None
    try:
        pid = ctx.get("patientId")
        facts = extract_facts(
            resources,
            draft_order_resources(ctx),
            library,
            patient_id=pid if isinstance(pid, str) and pid else None,
            now=now,
        )
        inp = HookInput(
            hook=req.hook,
            hook_instance=req.hookInstance,
            patient_id=str(ctx.get("patientId", "")),
            user_id=str(ctx.get("userId", "")),
            encounter_id=ctx.get("encounterId") if isinstance(ctx.get("encounterId"), str) else None,
            selections=tuple(s for s in ctx.get("selections") or () if isinstance(s, str)),
            now=now,
            facts=facts,
            unavailable=unavailable,
        )
        return service.handler(inp), inp
    except Exception:
        log.exception("rule evaluation failed", extra={"service": service.id, "hook": req.hook})
        return [_internal_error_card()], inp


async def invoke(
    service: ServiceDefinition,
    req: HookRequest,
    *,
    client: FhirPool | httpx.AsyncClient,
    limits: FetchLimits,
    now: datetime,
    base_url: str,
    library: ValueSetLibrary | None = None,
    allowed_fhir_servers: frozenset[str] | None = None,
) -> InvocationResult:
    """Run one hook call. Raises PrefetchUnobtainable (→ 412) when required data cannot be had."""
    started = time.perf_counter()
    if service.quick_scope is not None and service.quick_scope(req.hook, req.context) is False:
        return InvocationResult(cards=[], skipped=True)
    token = req.fhirAuthorization.access_token if req.fhirAuthorization else None
    outcomes = await resolve(
        service.prefetch,
        req.hook,
        req.context,
        req.prefetch,
        req.fhirServer,
        token,
        client,
        limits,
        allowed_fhir_servers,
    )
    resources = [r for o in outcomes.values() if o.available for r in o.resources]
    # V2.4: a medication named only by a reference the request did not resolve is fetched, never guessed.
    medications, med_outcome = await fetch_medications(
        resources,
        draft_order_resources(req.context),
        fhir_server=req.fhirServer,
        access_token=token,
        client=client,
        limits=limits,
        seconds_left=limits.deadline_s - (time.perf_counter() - started),
        allowed=allowed_fhir_servers,  # the same allowlist as the prefetch (issue 16)
    )
    if med_outcome is not None:
        outcomes[MEDICATION_REFS_KEY] = med_outcome
        resources.extend(medications)
    fetched = time.perf_counter()
    unavailable = frozenset(k for k, o in outcomes.items() if not o.available)
    specs, inp = evaluate_with_input(service, req, resources, unavailable, now, library)
    cards = build_cards(specs, base_url)
    done = time.perf_counter()
    return InvocationResult(
        cards=cards,
        outcomes=outcomes,
        hook_input=inp,
        specs=specs,
        timings_ms={"prefetch": (fetched - started) * 1000, "rules": (done - fetched) * 1000},
    )
