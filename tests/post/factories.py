"""Hand-built facts for the post-procedure and discharge tests (fixed clock, no FHIR parsing)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.contracts import CardSpec, HookInput
from fhir_mappings.facts import (
    AllergyFact,
    ClinicalFacts,
    ConditionFact,
    Evidence,
    Measurement,
    MedicationFact,
    OrderFact,
    ProcedureFact,
)
from hooks.discharge.service import make_handler as discharge_handler
from hooks.policy import Policy, PolicyValue, load_policy
from hooks.postprocedure.service import make_handler as post_handler

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
VA_T = NOW - timedelta(days=1)  # default VA start: yesterday 12:00 UTC
POLICY = load_policy()
PATIENT = "pat1"
ENCOUNTER = "enc1"
_ids = itertools.count(1)


def policy_with(**thresholds: float) -> Policy:
    """The packaged policy with some thresholds replaced (e.g. a longer look-back)."""
    values = dict(POLICY.thresholds)
    for key, value in thresholds.items():
        values[key] = PolicyValue(value=value, unit=values[key].unit, source="test")
    return dataclasses.replace(POLICY, thresholds=values)


def ev(kind: str, summary: str = "") -> Evidence:
    return Evidence(f"{kind}/{next(_ids)}", summary or f"{kind} test")


def va(
    start: datetime = VA_T,
    *,
    level: str | None = "T12",
    region: Any = "thoracic",
    status: str = "completed",
    end: datetime | None = None,
    encounter: str | None = None,
    documented: bool = True,
    ref: str | None = None,
) -> ProcedureFact:
    return ProcedureFact(
        evidence=Evidence(ref or f"Procedure/{next(_ids)}", f"Kyphoplasty {level or ''} on {start.date()}"),
        is_va=True,
        concepts=frozenset({"vertebral-augmentation"}),
        status=status,
        start=start,
        end=end if end is not None else start + timedelta(minutes=45),
        level=level,
        region=region,
        encounter=encounter,
        has_level=documented and level is not None,
        has_approach=documented,
        has_cement_details=documented,
        has_complications=documented,
        display="Percutaneous kyphoplasty",
    )


def proc(
    concepts: Iterable[str], when: datetime, display: str = "", status: str = "completed"
) -> ProcedureFact:
    return ProcedureFact(
        evidence=ev("Procedure", display or "procedure"),
        is_va=False,
        concepts=frozenset(concepts),
        status=status,
        start=when,
        end=when + timedelta(minutes=10),
        level=None,
        region=None,
        encounter=None,
        display=display,
    )


def cond(
    concept: str,
    onset: datetime | None,
    *,
    active: bool = True,
    display: str | None = None,
    followup: bool = False,
) -> ConditionFact:
    return ConditionFact(
        evidence=ev("Condition", f"{concept} onset {onset.date() if onset else '?'}"),
        concepts=frozenset({concept}),
        active=active,
        onset=onset,
        abatement=None,
        display=display if display is not None else concept.replace("-", " ").capitalize(),
        followup_encounter=followup,
    )


def meas(kind: str, value: float | None, when: datetime, *, positive: bool | None = None) -> Measurement:
    return Measurement(
        evidence=ev("Observation", f"{kind} {value} on {when.date()}"),
        kind=kind,
        value=value,
        unit="",
        time=when,
        positive=positive,
    )


def med(
    ingredient: str,
    *,
    drug_class: Any = "osteoporosis",
    active: bool = True,
    status: str = "active",
    authored: datetime | None = None,
    draft: bool = False,
    resource_type: str = "MedicationRequest",
) -> MedicationFact:
    return MedicationFact(
        evidence=ev(resource_type, ingredient),
        ingredient=ingredient,
        drug_class=drug_class,
        resource_type=resource_type,
        status=status,
        active=active,
        draft=draft,
        authored=authored,
        display=ingredient,
    )


def order(
    concept: str, *, status: str = "active", draft: bool = False, planned: datetime | None = None
) -> OrderFact:
    return OrderFact(
        evidence=ev("ServiceRequest", concept),
        resource_type="ServiceRequest",
        is_va=False,
        concepts=frozenset({concept}),
        codes=frozenset(),
        status=status,
        draft=draft,
        planned=planned,
        level=None,
        region=None,
        display=concept,
    )


def cement_allergy() -> AllergyFact:
    return AllergyFact(ev("AllergyIntolerance"), frozenset({"bone-cement"}), True, "PMMA bone cement")


def treated() -> list[MedicationFact]:
    """Active alendronate: keeps the bone-health rule quiet in tests about other rules."""
    return [med("alendronate")]


def make_facts(
    *,
    procedures: Iterable[ProcedureFact] = (),
    conditions: Iterable[ConditionFact] = (),
    measurements: Iterable[Measurement] = (),
    medications: Iterable[MedicationFact] | None = None,
    draft_medications: Iterable[MedicationFact] = (),
    orders: Iterable[OrderFact] = (),
    draft_orders: Iterable[OrderFact] = (),
    allergies: Iterable[AllergyFact] = (),
) -> ClinicalFacts:
    return ClinicalFacts(
        procedures=list(procedures),
        conditions=list(conditions),
        measurements=list(measurements),
        medications=treated() if medications is None else list(medications),
        draft_medications=list(draft_medications),
        orders=list(orders),
        draft_orders=list(draft_orders),
        allergies=list(allergies),
    )


def hook_input(
    facts: ClinicalFacts,
    *,
    now: datetime = NOW,
    hook: str = "encounter-start",
    unavailable: Iterable[str] = (),
    encounter_id: str | None = ENCOUNTER,
) -> HookInput:
    return HookInput(
        hook=hook,
        hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        patient_id=PATIENT,
        user_id="Practitioner/doc",
        encounter_id=encounter_id,
        selections=(),
        now=now,
        facts=facts,
        unavailable=frozenset(unavailable),
    )


def run_post(
    facts: ClinicalFacts,
    *,
    now: datetime = NOW,
    policy: Policy = POLICY,
    unavailable: Iterable[str] = (),
    hook: str = "encounter-start",
) -> list[CardSpec]:
    return post_handler(policy)(hook_input(facts, now=now, unavailable=unavailable, hook=hook))


def run_discharge(
    facts: ClinicalFacts,
    *,
    now: datetime = NOW,
    policy: Policy = POLICY,
    unavailable: Iterable[str] = (),
    encounter_id: str | None = ENCOUNTER,
) -> list[CardSpec]:
    inp = hook_input(
        facts, now=now, unavailable=unavailable, hook="encounter-discharge", encounter_id=encounter_id
    )
    return discharge_handler(policy)(inp)


def ids(cards: Iterable[CardSpec]) -> set[str]:
    return {c.rule_id for c in cards}


def card(cards: Iterable[CardSpec], rule_id: str) -> CardSpec:
    found = [c for c in cards if c.rule_id == rule_id]
    assert len(found) == 1, f"expected one {rule_id} card, got {[c.rule_id for c in cards]}"
    return found[0]


def suggested_codes(spec: CardSpec) -> list[str]:
    """The ServiceRequest code texts (or resource types) a card suggests, in order."""
    out: list[str] = []
    for s in spec.suggestions:
        for r in s.resources:
            out.append(r["code"]["text"] if r["resourceType"] == "ServiceRequest" else r["resourceType"])
    return out
