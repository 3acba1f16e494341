"""Contracts between the service core and the clinical hooks: no HTTP, no JSON wire models.

A clinical service is a `ServiceDefinition`: its discovery fields, its prefetch templates, which checks
depend on which prefetch key (to name them when a source fails), and a handler that turns a `HookInput`
(typed facts, never raw JSON) into `CardSpec`s. The core turns those into spec-valid cards.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from fhir_mappings.facts import ClinicalFacts, Evidence

Indicator = Literal["info", "warning", "critical"]
# The pseudo prefetch key under which the core reports Medications it fetched for medicationReferences the
# request did not resolve (cds_service.medication_refs): a failed fetch makes `sys.data-unavailable` name the
# medication checks (V2.4).
MEDICATION_REFS_KEY = "medicationReferences"
# Checks fed by sources the core adds itself (not prefetch keys); `data_unavailable_card` names them for every
# family, so no family has to list them.
CORE_CHECKS_BY_KEY: Mapping[str, tuple[str, ...]] = {
    MEDICATION_REFS_KEY: (
        "Medications named only by a reference the EHR did not send (anticoagulant/antiplatelet review): "
        "the Medication could not be fetched",
    ),
}
INDICATOR_ORDER: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class SuggestionSpec:
    """One accept-able choice: FHIR resources to create (already validated by whoever built them)."""

    label: str
    resources: tuple[dict[str, Any], ...]
    description: str  # what accepting does, e.g. "Order INR (LOINC 6301-6)"
    is_recommended: bool = False


@dataclass(frozen=True, slots=True)
class LinkSpec:
    label: str
    url: str  # absolute, or a path beginning with "/" that the core resolves against the public base URL
    type: Literal["absolute", "smart"] = "absolute"


@dataclass(frozen=True, slots=True)
class OverrideReasonSpec:
    code: str
    display: str


DEFAULT_OVERRIDE_REASONS: tuple[OverrideReasonSpec, ...] = (
    OverrideReasonSpec("held-per-protocol", "Held or managed per anticoagulation/peri-procedural protocol"),
    OverrideReasonSpec("benefit-outweighs-risk", "Benefit outweighs risk — documented"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """What one rule concluded (catalog v2, V2.2): a rule returns a Finding, never a card.

    A family's presentation step decides whether a finding stands alone as a card (`CardSpec.from_finding`)
    or folds into another card (`CardSpec.folded`) or into the checklist. `indicator` is the loudness the rule
    proposes; presentation may lower it. `line` is how the finding reads as one item of another card.
    """

    rule_id: str
    indicator: Indicator
    summary: str  # problem and action, < 140 characters
    detail: str  # short Markdown; record text through `md_escape`
    citation: str
    evidence: tuple[Evidence, ...] = ()
    policy_used: Mapping[str, Any] = field(default_factory=dict)
    suggestions: tuple[SuggestionSpec, ...] = ()
    override_reasons: tuple[OverrideReasonSpec, ...] | None = None
    links: tuple[LinkSpec, ...] = ()
    line: str = ""  # one line when folded into another card ("" → the summary)

    def __post_init__(self) -> None:
        # An off-catalog card must be impossible to build: no rule id or citation, no finding.
        if not self.rule_id or not self.citation:
            raise ValueError("a finding needs a rule id and a citation")


@dataclass(frozen=True, slots=True)
class CardSpec:
    """What a rule decides. The core adds uuids, source, extensions and validates the result.

    `folded` are the findings this card carries besides its own (V2.2): the core lists their rule ids in
    `org.va-cds.findings` after the card's own id and tags each evidence entry with the finding it supports.
    """

    rule_id: str
    indicator: Indicator
    summary: str  # one sentence, < 140 characters
    detail: str  # GitHub-flavoured Markdown; patient-supplied text must go through `md_escape`
    citation: str  # e.g. "Chapter §2.1 (Checklist — Pre-procedure safety); refs [6–9]"
    evidence: tuple[Evidence, ...] = ()
    policy_used: Mapping[str, Any] = field(default_factory=dict)
    suggestions: tuple[SuggestionSpec, ...] = ()
    selection_behavior: Literal["any", "at-most-one"] = "any"
    override_reasons: tuple[OverrideReasonSpec, ...] | None = None  # None → defaults on warning/critical
    links: tuple[LinkSpec, ...] = ()
    folded: tuple[Finding, ...] = ()

    @classmethod
    def from_finding(
        cls,
        finding: Finding,
        *,
        folded: tuple[Finding, ...] = (),
        indicator: Indicator | None = None,
        summary: str | None = None,
        detail: str | None = None,
        suggestions: tuple[SuggestionSpec, ...] | None = None,
    ) -> CardSpec:
        """The card for one finding, carrying the findings folded into it (their lines end the detail)."""
        body = finding.detail if detail is None else detail
        lines = [f"- {f.line or f.summary}" for f in folded]
        if lines:
            body = f"{body}\n\n**Also:**\n" + "\n".join(lines) if body else "\n".join(lines)
        return cls(
            rule_id=finding.rule_id,
            indicator=finding.indicator if indicator is None else indicator,
            summary=finding.summary if summary is None else summary,
            detail=body,
            citation=finding.citation,
            evidence=finding.evidence,
            policy_used=finding.policy_used,
            suggestions=finding.suggestions if suggestions is None else suggestions,
            override_reasons=finding.override_reasons,
            links=finding.links,
            folded=folded,
        )


@dataclass(frozen=True, slots=True)
class HookInput:
    """Everything a handler may read for one hook call."""

    hook: str
    hook_instance: str
    patient_id: str
    user_id: str
    encounter_id: str | None
    selections: tuple[str, ...]
    now: datetime  # the request time (timezone-aware UTC); "recent" windows are measured from it
    facts: ClinicalFacts
    unavailable: frozenset[str] = frozenset()  # prefetch keys whose source failed (unknown, not missing)


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """What the rule documentation page (`/docs/rules/<id>`) says about one rule."""

    rule_id: str
    title: str
    indicator: Indicator
    checks: str  # what it checks and when it fires, in our words
    reads: tuple[str, ...]  # the evidence it reads, e.g. ("INR (LOINC 6301-6) within the coag window",)
    steps: tuple[str, ...]  # what the card advises, in order (algorithm steps)
    citation: str  # chapter section and reference numbers
    policy_keys: tuple[
        str, ...
    ] = ()  # keys of policy thresholds/windows it uses ("antithrombotic_holds" too)
    hooks: tuple[str, ...] = ()


Handler = Callable[[HookInput], list[CardSpec]]
# Decides from the hook context alone (before any prefetch/fetch) that the service cannot apply:
# returns False to answer {"cards": []} at once, None when data is needed to decide.
QuickScope = Callable[[str, Mapping[str, Any]], bool | None]


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """One CDS service: one id, one hook (catalog V2.1 — EHRs and the sandbox keep one hook per URL)."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str]
    usage_requirements: str
    checks_by_key: Mapping[str, tuple[str, ...]]  # prefetch key → human names of checks that read it
    handler: Handler
    quick_scope: QuickScope | None = None
    rules: tuple[RuleDoc, ...] = ()  # every rule this service can emit (docs pages, metrics)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|>~])")


def md_escape(text: str) -> str:
    """Make record text safe inside card Markdown: no raw HTML, no Markdown structure, one line."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=True))
