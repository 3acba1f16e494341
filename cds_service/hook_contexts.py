"""Hook Library STU1 contexts: which context fields each hook requires, and which are prefetch tokens.

The envelope is checked strictly here (a missing `patientId` is a 400, not a guess); the FHIR inside
`draftOrders` is left for `fhir_mappings` to read leniently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.auth.fhir_servers import is_fhir_id


@dataclass(frozen=True, slots=True)
class HookSpec:
    name: str
    required: tuple[str, ...]
    tokens: tuple[str, ...]  # context fields marked "Prefetch Token: Yes"
    user_types: tuple[str, ...]  # resource types allowed in userId


_CLINICIAN = ("Practitioner", "PractitionerRole")
_ANY_USER = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")

HOOKS: dict[str, HookSpec] = {
    "patient-view": HookSpec(
        "patient-view", ("userId", "patientId"), ("userId", "patientId", "encounterId"), _ANY_USER
    ),
    "order-sign": HookSpec(
        "order-sign",
        ("userId", "patientId", "draftOrders"),
        ("userId", "patientId", "encounterId"),
        _CLINICIAN,
    ),
    "order-select": HookSpec(
        "order-select",
        ("userId", "patientId", "draftOrders", "selections"),
        ("userId", "patientId", "encounterId"),
        _CLINICIAN,
    ),
    "encounter-start": HookSpec(
        "encounter-start",
        ("userId", "patientId", "encounterId"),
        ("userId", "patientId", "encounterId"),
        _CLINICIAN,
    ),
    "encounter-discharge": HookSpec(
        "encounter-discharge",
        ("userId", "patientId", "encounterId"),
        ("userId", "patientId", "encounterId"),
        _CLINICIAN,
    ),
}

# Tokens derived from context.userId ("Practitioner/123" → userPractitionerId = "123").
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def context_problems(hook: str, context: dict[str, Any]) -> list[str]:
    """What is wrong with a hook's context, as short human sentences (empty when it is fine)."""
    spec = HOOKS.get(hook)
    if spec is None:
        return [f"hook '{hook}' is not supported"]
    problems: list[str] = []
    for name in spec.required:
        if name not in context or context[name] is None:
            problems.append(f"context.{name} is required for {hook}")
    for name in ("userId", "patientId", "encounterId"):
        value = context.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"context.{name} must be a non-empty string")
    user = context.get("userId")
    if isinstance(user, str) and user.strip():
        kind, _, ident = user.partition("/")
        if not ident or kind not in spec.user_types:
            allowed = ", ".join(spec.user_types)
            problems.append(f"context.userId must be a reference like 'Practitioner/123' ({allowed})")
    for name in ("patientId", "encounterId"):
        value = context.get(name)
        if isinstance(value, str) and "/" in value:
            problems.append(f"context.{name} must be a bare id, not a reference")
        elif isinstance(value, str) and value.strip() and not is_fhir_id(value):
            # These fill prefetch queries: "1&_count=99999" or ".." would change the query, not fill it.
            problems.append(f"context.{name} must be a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    if isinstance(user, str) and "/" in user:
        ident = user.partition("/")[2]
        if ident and not is_fhir_id(ident):
            problems.append("context.userId must end in a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    if "draftOrders" in spec.required and "draftOrders" in context:
        orders = context["draftOrders"]
        if not isinstance(orders, dict) or orders.get("resourceType") != "Bundle":
            problems.append("context.draftOrders must be a FHIR Bundle")
        elif "entry" in orders and not isinstance(orders["entry"], list):
            problems.append("context.draftOrders.entry must be an array")
    if "selections" in spec.required and "selections" in context:
        sel = context["selections"]
        if not isinstance(sel, list) or not all(isinstance(s, str) and "/" in s for s in sel):
            problems.append("context.selections must be an array of references like 'ServiceRequest/1'")
    return problems
