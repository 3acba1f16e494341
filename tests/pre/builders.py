"""Hand-built clinical facts for the va-preprocedure tests (no FHIR parsing involved).

`ready_facts()` is a patient who is ready for a VA by every data-driven check (recent normal labs,
afebrile, recent MRI with oedema at the ordered level, nothing alarming): each test adds or removes one
thing and looks at the one rule it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import count

from cds_service.contracts import CardSpec, HookInput
from fhir_mappings.facts import (
    AllergyFact,
    ClinicalFacts,
    ConditionFact,
    Evidence,
    ImagingFact,
    Measurement,
    MedicationFact,
    OrderFact,
    PatientFact,
)
from hooks.policy import load_policy
from hooks.preprocedure import ChecklistItem, checklist_items, services

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
POLICY = load_policy()
SERVICES = services(POLICY)
SERVICE = SERVICES[0]  # order-sign; the three pre-procedure services share one handler
_ids = count(1)
CPT = "http://www.ama-assn.org/go/cpt"

UNITS = {"inr": "{INR}", "platelets": "10*9/L", "wbc": "10*9/L", "crp": "mg/L", "temperature": "Cel"}


def ev(rtype: str, summary: str) -> Evidence:
    return Evidence(f"{rtype}/{next(_ids)}", summary)


def patient(age: float = 78, sex: str = "female") -> PatientFact:
    return PatientFact(ev("Patient", "patient"), NOW - timedelta(days=age * 365.25), sex)  # type: ignore[arg-type]


def med(
    ingredient: str,
    drug_class: str = "anticoagulant",
    *,
    active: bool = True,
    draft: bool = False,
    display: str | None = None,
    authored: datetime | None = None,
    daily_dose: float | None = None,
    dose_unit: str | None = None,
    local: bool = False,
) -> MedicationFact:
    shown = display or f"{ingredient} tablet"
    return MedicationFact(
        ev("MedicationRequest", shown),
        ingredient,
        drug_class,  # type: ignore[arg-type]
        "MedicationRequest",
        "draft" if draft else ("active" if active else "stopped"),
        active and not draft,
        draft,
        authored or NOW - timedelta(days=90),
        shown,
        daily_dose=daily_dose,
        dose_unit=dose_unit,
        dose_form_local=local,
    )


def meas(
    kind: str,
    value: float | None,
    ago: timedelta,
    *,
    positive: bool | None = None,
    status: str = "final",
    unusable: str | None = None,
    text: str | None = None,
) -> Measurement:
    at = NOW - ago
    return Measurement(
        ev("Observation", text or f"{kind} {value} on {at.date()}"),
        kind,
        value,
        UNITS.get(kind, ""),
        at,
        positive,
        status=status,
        unusable=unusable,
    )


_DEFAULT_ONSET = timedelta(days=400)


def cond(
    concept: str,
    *,
    active: bool = True,
    display: str | None = None,
    onset: timedelta | None = _DEFAULT_ONSET,
    recorded: timedelta | None = None,
    chronic: bool = False,
    abated: bool = False,
) -> ConditionFact:
    """A Condition; `onset`/`recorded` are how long ago (None = not stated)."""
    shown = display or concept
    return ConditionFact(
        ev("Condition", shown),
        frozenset({concept}),
        active,
        None if onset is None else NOW - onset,
        NOW - timedelta(days=30) if abated else None,
        shown,
        recorded=None if recorded is None else NOW - recorded,
        chronic=chronic,
    )


def allergy(concept: str, display: str | None = None, *, active: bool = True) -> AllergyFact:
    shown = display or concept
    return AllergyFact(ev("AllergyIntolerance", shown), frozenset({concept}), active, shown)


def va_order(
    *,
    draft: bool = True,
    planned: datetime | None = None,
    level: str | None = "L1",
    resource_type: str = "ServiceRequest",
    status: str | None = None,
    priority: str | None = None,
) -> OrderFact:
    return OrderFact(
        ev(resource_type, "Kyphoplasty L1"),
        resource_type,
        True,
        frozenset({"vertebral-augmentation"}),
        frozenset({(CPT, "22514")}),
        status or ("draft" if draft else ("booked" if resource_type == "Appointment" else "active")),
        draft,
        planned,
        level,
        "lumbar",
        "Percutaneous kyphoplasty, lumbar",
        priority=priority,
    )


def order(concept: str, *, draft: bool = True, status: str = "draft") -> OrderFact:
    return OrderFact(
        ev("ServiceRequest", concept),
        "ServiceRequest",
        False,
        frozenset({concept}),
        frozenset(),
        status,
        draft,
        None,
        None,
        None,
        concept,
    )


def mri(
    ago: timedelta = timedelta(days=10),
    findings: Iterable[str] = ("edema", "acute"),
    levels: Iterable[str] = ("L1",),
    modality: str = "mri",
) -> ImagingFact:
    return ImagingFact(
        ev("DiagnosticReport", "MR lumbar spine"),
        modality,  # type: ignore[arg-type]
        "lumbar spine",
        NOW - ago,
        frozenset(findings),
        frozenset(levels),
        "MR lumbar spine",
    )


def ready_facts(*, va: OrderFact | None = None) -> ClinicalFacts:
    """A patient ready for VA by every data-driven check, with a drafted VA order (unless va is given)."""
    return ClinicalFacts(
        patient=patient(),
        measurements=[
            meas("inr", 1.0, timedelta(days=3)),
            meas("platelets", 220, timedelta(days=3)),
            meas("wbc", 7.1, timedelta(days=3)),
            meas("crp", 3.0, timedelta(days=3)),
            meas("temperature", 36.8, timedelta(hours=5)),
        ],
        imaging=[mri()],
        draft_orders=[va or va_order(planned=NOW + timedelta(days=7))],
    )


def hook_input(
    facts: ClinicalFacts,
    hook: str = "order-sign",
    *,
    unavailable: Iterable[str] = (),
    now: datetime = NOW,
) -> HookInput:
    return HookInput(
        hook=hook,
        hook_instance="00000000-0000-4000-8000-000000000001",
        patient_id="pat-1",
        user_id="Practitioner/doc-1",
        encounter_id="enc-1",
        selections=(),
        now=now,
        facts=facts,
        unavailable=frozenset(unavailable),
    )


def run(
    facts: ClinicalFacts,
    hook: str = "order-sign",
    *,
    unavailable: Iterable[str] = (),
    now: datetime = NOW,
) -> list[CardSpec]:
    return SERVICE.handler(hook_input(facts, hook, unavailable=unavailable, now=now))


def rows(
    facts: ClinicalFacts, hook: str = "order-sign", *, unavailable: Iterable[str] = (), now: datetime = NOW
) -> dict[str, ChecklistItem]:
    """The checklist rows as the checklist page gets them, by item id."""
    items = checklist_items(hook_input(facts, hook, unavailable=unavailable, now=now), POLICY)
    return {i.id: i for i in items}


def carried(cards: Iterable[CardSpec]) -> dict[str, str]:
    """finding id → the rule id of the card that carries it (itself when it is a card of its own)."""
    out: dict[str, str] = {}
    for c in cards:
        for rid in (c.rule_id, *(f.rule_id for f in c.folded)):
            assert rid not in out, f"finding {rid} carried twice"
            out[rid] = c.rule_id
    return out


def interruptive(cards: Iterable[CardSpec]) -> list[CardSpec]:
    return [c for c in cards if c.indicator in ("warning", "critical")]


def by_rule(cards: Iterable[CardSpec]) -> dict[str, CardSpec]:
    out: dict[str, CardSpec] = {}
    for c in cards:
        assert c.rule_id not in out, f"two cards for {c.rule_id}"
        out[c.rule_id] = c
    return out


def rule_ids(cards: Iterable[CardSpec]) -> set[str]:
    return set(by_rule(cards))


def all_text(card: CardSpec) -> str:
    return card.summary + "\n" + card.detail


def priorities(card: CardSpec) -> set[str | None]:
    return {r.get("priority") for s in card.suggestions for r in s.resources}


def suggested_codes(card: CardSpec) -> list[str]:
    """The codes (or text) of the ServiceRequests a card suggests."""
    out = []
    for s in card.suggestions:
        for r in s.resources:
            coding = r.get("code", {}).get("coding", [{}])[0]
            out.append(coding.get("code") or r["code"]["text"])
    return out
