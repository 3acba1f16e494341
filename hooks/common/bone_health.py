"""Bone health after vertebral augmentation: is osteoporosis therapy on record, is oncology in charge, DXA.

Read by the post-procedure rule `post.bone-health.untreated` and the discharge rule `discharge.bone-health`.
Therapy = an anti-resorptive or anabolic agent (terminology §8; calcium or vitamin D alone are not
therapy): an active order/statement, or for an injectable a dose inside its dosing interval. With an
active myeloma or skeletal metastasis on record the bone plan belongs to oncology, so neither rule fires
(catalog V2.6). The DXA interval is an institutional choice (policy `dxa_interval_years`); the chapter
only says "if no recent assessment".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_service.contracts import md_escape
from fhir_mappings.facts import ClinicalFacts, ConditionFact, Evidence, MedicationFact
from hooks.policy import Policy

DAYS_PER_MONTH = 365.25 / 12
ONCOLOGY_CONCEPT = "myeloma-metastasis"

# Injectable anti-osteoporosis agents count as therapy for their dosing interval after the last dose.
INJECTABLE_INTERVAL_KEYS = {
    "zoledronic acid": "zoledronic_interval_months",
    "zoledronate": "zoledronic_interval_months",
    "denosumab": "denosumab_interval_months",
}
# Statuses under which a medication record says nothing about therapy being given.
_NOT_GIVEN = frozenset({"entered-in-error", "cancelled", "not-taken", "stopped", "draft", "unknown"})
_DXA_TEXT = re.compile(r"\b(dxa|dexa|densitometr\w*|bone (mineral )?density)\b", re.IGNORECASE)

# Orderable concepts (hooks.orders) a bone-health card offers; DXA only when none is recent.
BONE_ORDERS = ("dxa", "consult-falls-clinic", "consult-endocrinology")


@dataclass(frozen=True, slots=True)
class BoneTherapy:
    current: tuple[MedicationFact, ...]  # active anti-osteoporosis therapy, or an injectable within interval
    planned: tuple[MedicationFact, ...]  # drafted in this request

    @property
    def any(self) -> bool:
        return bool(self.current or self.planned)


def osteoporosis_therapy(facts: ClinicalFacts, policy: Policy, now: datetime) -> BoneTherapy:
    """Anti-resorptive/anabolic therapy on the record or drafted in this request."""
    current: list[MedicationFact] = []
    for med in facts.medications:
        if med.drug_class != "osteoporosis" or med.draft:
            continue
        if med.active:
            current.append(med)
            continue
        key = INJECTABLE_INTERVAL_KEYS.get(med.ingredient.lower())
        if key is None or med.status in _NOT_GIVEN or med.authored is None:
            continue
        interval = timedelta(days=policy.value(key) * DAYS_PER_MONTH)
        if now - interval <= med.authored <= now:
            current.append(med)
    planned = [m for m in facts.draft_medications if m.drug_class == "osteoporosis"]
    return BoneTherapy(tuple(current), tuple(planned))


def oncology_condition(facts: ClinicalFacts, now: datetime) -> ConditionFact | None:
    """An active multiple myeloma or skeletal metastasis (not dated in the future), if any."""
    for cond in facts.conditions_with((ONCOLOGY_CONCEPT,)):
        if cond.active and (cond.onset is None or cond.onset <= now):
            return cond
    return None


def recent_dxa(facts: ClinicalFacts, now: datetime, years: float) -> Evidence | None:
    """Evidence of a bone-density assessment within `years` (orders, reports/studies, procedures)."""
    since = now - timedelta(days=years * 365.25)

    def recent(when: datetime | None) -> bool:
        return when is not None and since <= when <= now

    for order in facts.orders:
        if "dxa" in order.concepts and order.status == "completed" and recent(order.planned):
            return order.evidence
    for img in facts.imaging:
        if _DXA_TEXT.search(img.display) and recent(img.time):
            return img.evidence
    for proc in facts.procedures:
        if ("dxa" in proc.concepts or _DXA_TEXT.search(proc.display)) and recent(proc.start or proc.end):
            return proc.evidence
    return None


def bone_orders(facts: ClinicalFacts, policy: Policy, now: datetime) -> tuple[str, ...]:
    """The orders a bone-health card offers: DXA only when none falls inside the institution's interval."""
    has_dxa = recent_dxa(facts, now, policy.value("dxa_interval_years")) is not None
    return tuple(c for c in BONE_ORDERS if not (c == "dxa" and has_dxa))


def bone_steps(policy: Policy, dxa: Evidence | None) -> tuple[str, ...]:
    """What a bone-health card advises, in order (chapter §5, ref [40]; DXA interval = local policy)."""
    years = f"{policy.value('dxa_interval_years'):g}"
    last = f"last: {md_escape(dxa.summary)}" if dxa else "none found"
    return (
        "Check calcium and vitamin D are sufficient (on their own they do not treat osteoporosis).",
        "Start anti-resorptive or anabolic therapy matched to fracture risk.",
        f"DXA/FRAX if none in {years} years (institutional interval; {last}).",
        "Screen falls risk; falls clinic and physiotherapy when indicated.",
    )
