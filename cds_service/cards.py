"""Card builder: turns a rule's `CardSpec` into a CDS Hooks 2.0 card that cannot be invalid.

Adds a uuid to every card and suggestion, the source (label, the rule's documentation page, the rule id
as topic), the `org.va-cds.*` extensions, default override reasons on warning/critical cards, and
validates the whole card with the strict wire model. Cards come back sorted critical first, at most one
per rule, each order suggested once per response (`cds_service.suggestions`), each with its evidence
fingerprint (`cds_service.memory.fingerprint`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from cds_service.contracts import DEFAULT_OVERRIDE_REASONS, INDICATOR_ORDER, CardSpec
from cds_service.memory.fingerprint import with_fingerprint
from cds_service.models import Action, Card, Coding, Link, OverrideReason, Source, Suggestion
from cds_service.suggestions import dedupe_suggestions

RULE_SYSTEM = "https://va-cds.org/fhir/CodeSystem/rule"
OVERRIDE_SYSTEM = "https://va-cds.org/fhir/CodeSystem/override-reason"
SOURCE_LABEL = "va-cds · Vertebral augmentation safety (Aydoğdu & Durak 2025)"
MAX_SUMMARY = 139


def rule_doc_url(base_url: str, rule_id: str) -> str:
    return f"{base_url.rstrip('/')}/docs/rules/{rule_id}"


def _absolute(base_url: str, url: str) -> str:
    return url if url.startswith(("http://", "https://")) else f"{base_url.rstrip('/')}{url}"


def _summary(text: str) -> str:
    one_line = " ".join(text.split())
    if len(one_line) <= MAX_SUMMARY:
        return one_line
    return one_line[: MAX_SUMMARY - 1].rstrip() + "…"


def build_card(spec: CardSpec, base_url: str) -> Card:
    """Build and validate one card. Raises pydantic.ValidationError on a programming error."""
    suggestions = [
        Suggestion(
            label=s.label,
            uuid=uuid.uuid4(),
            isRecommended=True if s.is_recommended else None,
            actions=[Action(type="create", description=s.description, resource=r) for r in s.resources],
        )
        for s in spec.suggestions
    ]
    reasons = spec.override_reasons
    if reasons is None:
        reasons = DEFAULT_OVERRIDE_REASONS if spec.indicator != "info" else ()
    extension: dict[str, Any] = {
        "org.va-cds.rule": spec.rule_id,
        "org.va-cds.citation": spec.citation,
    }
    # Every finding the card carries, its own first (V2.2); each evidence entry names the finding it supports.
    extension["org.va-cds.findings"] = [spec.rule_id, *(f.rule_id for f in spec.folded)]
    evidence = [{"reference": e.reference, "summary": e.summary, "rule": spec.rule_id} for e in spec.evidence]
    for folded in spec.folded:
        evidence.extend(
            {"reference": e.reference, "summary": e.summary, "rule": folded.rule_id} for e in folded.evidence
        )
    if evidence:
        extension["org.va-cds.evidence"] = evidence
    if spec.policy_used:
        extension["org.va-cds.policy"] = dict(spec.policy_used)
    detail = spec.detail.strip()
    if spec.citation and spec.citation not in detail:
        detail = f"{detail}\n\n*Source: {spec.citation}.*" if detail else f"*Source: {spec.citation}.*"
    return Card(
        uuid=uuid.uuid4(),
        summary=_summary(spec.summary),
        detail=detail or None,
        indicator=spec.indicator,
        source=Source(
            label=SOURCE_LABEL,
            url=rule_doc_url(base_url, spec.rule_id),
            topic=Coding(system=RULE_SYSTEM, code=spec.rule_id, display=spec.rule_id),
        ),
        suggestions=suggestions or None,
        selectionBehavior=spec.selection_behavior if suggestions else None,
        overrideReasons=[
            OverrideReason(system=OVERRIDE_SYSTEM, code=r.code, display=r.display) for r in reasons
        ]
        or None,
        links=[
            Link(label=link.label, url=_absolute(base_url, link.url), type=link.type) for link in spec.links
        ]
        or None,
        extension=extension,
    )


def build_cards(specs: Iterable[CardSpec], base_url: str) -> list[Card]:
    """At most one card per rule (the most severe wins), sorted critical → warning → info, and each order
    suggested at most once per response, on the most severe card that offers it (V2.7)."""
    by_rule: dict[str, CardSpec] = {}
    for spec in specs:
        held = by_rule.get(spec.rule_id)
        if held is None or INDICATOR_ORDER[spec.indicator] < INDICATOR_ORDER[held.indicator]:
            by_rule[spec.rule_id] = spec
    ordered = sorted(by_rule.values(), key=lambda s: INDICATOR_ORDER[s.indicator])  # stable within a level
    # fingerprint: alert memory
    return [with_fingerprint(build_card(s, base_url)) for s in dedupe_suggestions(ordered)]
