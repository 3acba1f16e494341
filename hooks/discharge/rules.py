"""The discharge rules (rule catalog, `va-discharge` table; MASTER CHECKLIST 'Post-procedure & Discharge').

Each rule reads the discharge context (hook input, policy, the VA this discharge is about) and returns a
`DischargeFinding` or None; `present.py` makes the cards. To add a discharge rule: write a function here,
list it in `RULES`, document it in `docs.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.contracts import Finding, HookInput, Indicator, OverrideReasonSpec
from fhir_mappings.facts import ClinicalFacts, Evidence, ProcedureFact
from hooks.common import fmt_date
from hooks.common.bone_health import (
    bone_orders,
    bone_steps,
    oncology_condition,
    osteoporosis_therapy,
    recent_dxa,
)
from hooks.common.timing import describe_va, va_end, va_time
from hooks.policy import Policy

NEURO_EXAM_MISSING = "discharge.neuro-exam-missing"
RED_FLAGS = "discharge.red-flags"
DOCUMENTATION = "discharge.documentation"
BONE_HEALTH = "discharge.bone-health"
FOLLOWUP = "discharge.followup"
DISCHARGE_RULE_IDS = (NEURO_EXAM_MISSING, RED_FLAGS, DOCUMENTATION, BONE_HEALTH, FOLLOWUP)

CITE_NEURO = (
    "MASTER CHECKLIST 'Post-procedure & Discharge' (immediate neuro check); Chapter §3.3.3 "
    "(discharge & follow-up); ref [29]"
)
CITE_RED_FLAGS = "MASTER CHECKLIST 'Post-procedure & Discharge' (discharge red flags); Chapter §5"
CITE_DOCUMENTATION = (
    "MASTER CHECKLIST 'Post-procedure & Discharge' (documentation); Chapter §3.3.3 and §3.2.3; "
    "refs [21–24,29]"
)
CITE_BONE = (
    "Chapter §5 (bone-health stewardship); MASTER CHECKLIST 'Post-procedure & Discharge'; ref [40]; "
    "DXA interval: institutional policy"
)
CITE_FOLLOWUP = "Chapter §5 (follow-up pathway); MASTER CHECKLIST 'Post-procedure & Discharge'"

_NEURO_TEXT = re.compile(r"\bneuro(logical|logic)?\s*(exam|examination|assessment|check|status)\b", re.I)

RED_FLAG_LINES = (
    "Fever or chills.",
    "Wound problems: redness, swelling, discharge or bleeding where the needle went in.",
    "New pain shooting down an arm or leg, numbness or weakness; trouble with bladder or bowel control.",
    "Shortness of breath, chest pain or pain on breathing.",
    "Sudden new or much worse back pain (a new fracture is possible).",
)
FOLLOWUP_LINES = (
    "2–6 weeks: clinical review of pain, function, analgesic use and the wound.",
    "Image only for new or worsening pain or neurological symptoms.",
    "3–6 months: bone-health review and new-fracture screen.",
    "Physiotherapy and falls-clinic referral when indicated.",
)


@dataclass(frozen=True, slots=True)
class DischargeContext:
    inp: HookInput
    policy: Policy
    va: ProcedureFact

    @property
    def facts(self) -> ClinicalFacts:
        return self.inp.facts

    @property
    def now(self) -> datetime:
        return self.inp.now


NEURO_OVERRIDES = (
    OverrideReasonSpec("documented-elsewhere", "Neurological exam documented elsewhere (e.g. nursing notes)"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
)
BONE_OVERRIDES = (
    OverrideReasonSpec("therapy-elsewhere", "Osteoporosis therapy documented outside this EHR"),
    OverrideReasonSpec("contraindicated", "Therapy contraindicated or declined — documented"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient (e.g. non-osteoporotic indication)"),
)
MAX_DETAIL_LINES = 8  # V2.8, the core's "*Source: …*" line included


@dataclass(frozen=True, slots=True)
class DischargeFinding(Finding):
    """A discharge `Finding` plus the orders it asks for (offered once per response by `present.py`)."""

    orders: tuple[str, ...] = ()
    recommended: tuple[str, ...] = ()
    reason: str = ""


def make_finding(
    c: DischargeContext,
    rule_id: str,
    indicator: Indicator,
    summary: str,
    lines: tuple[str, ...],
    steps: tuple[str, ...],
    citation: str,
    policy: Mapping[str, Any],
    *,
    evidence: tuple[Evidence, ...] = (),
    orders: tuple[str, ...] = (),
    recommended: tuple[str, ...] = (),
    reason: str = "",
    overrides: tuple[OverrideReasonSpec, ...] | None = None,
) -> DischargeFinding:
    """A discharge finding; detail = the procedure and what was found, then the steps (≤ 8 lines)."""
    head = f"Procedure: {describe_va(c.va)}"
    body = [f"{head}: {' '.join(lines)}" if lines else f"{head}."]
    body += [f"{i}. {step}" for i, step in enumerate(steps[: MAX_DETAIL_LINES - 2], 1)]
    return DischargeFinding(
        rule_id=rule_id,
        indicator=indicator,
        summary=summary,
        detail="\n\n".join(body),
        citation=citation,
        evidence=evidence or (c.va.evidence,),
        policy_used=policy,
        override_reasons=overrides,
        orders=orders,
        recommended=recommended,
        reason=reason,
    )


def neuro_exam_after(facts: ClinicalFacts, after: datetime | None, now: datetime) -> Evidence | None:
    """A neurological exam (Procedure, or Observation read as a finding) dated from the VA's end to now."""
    if after is None:
        return None
    for proc in facts.procedures:
        if proc.is_va or proc.status in ("entered-in-error", "not-done"):
            continue
        if "neuro-exam" in proc.concepts or _NEURO_TEXT.search(proc.display):
            when = proc.start or proc.end
            if when is not None and after <= when <= now:
                return proc.evidence
    for cond in facts.conditions:
        if "neuro-exam" in cond.concepts or _NEURO_TEXT.search(cond.display):
            if cond.onset is not None and after <= cond.onset <= now:
                return cond.evidence
    return None


def neuro_exam_missing(c: DischargeContext) -> DischargeFinding | None:
    end = va_end(c.va)
    if neuro_exam_after(c.facts, end, c.now) is not None:
        return None
    return make_finding(
        c,
        NEURO_EXAM_MISSING,
        "warning",
        "No neurological exam recorded since the VA: document one before discharge",
        (f"No neurological examination dated after the procedure ended ({fmt_date(end)}).",),
        (
            "Record limb motor and sensory function, saddle sensation and sphincter function.",
            "Compare with the pre-procedure baseline exam.",
            "Any new deficit: urgent MRI/CT and spine surgery review before the patient leaves.",
        ),
        CITE_NEURO,
        {},
        overrides=NEURO_OVERRIDES,
    )


def red_flags(c: DischargeContext) -> DischargeFinding:
    return make_finding(
        c,
        RED_FLAGS,
        "info",
        "Before discharge, explain the red flags after vertebral augmentation and who to call",
        ("Teach the patient to seek help at once for:",),
        (*RED_FLAG_LINES, "Give the number to call and when to go to the emergency department."),
        CITE_RED_FLAGS,
        {"discharge_recent_va_days": c.policy.value("discharge_recent_va_days")},
    )


def documentation(c: DischargeContext) -> DischargeFinding | None:
    va = c.va
    missing: list[str] = []
    if not (va.has_level or va.level):
        missing.append("Level(s) treated")
    if not va.has_approach:
        missing.append("Approach (uni-/bipedicular, trans-/extrapedicular)")
    if not va.has_cement_details:
        missing.append("Cement details: brand, lot and volume")
    if not va.has_complications:
        missing.append("Complications (or a note stating none)")
    if not missing:
        return None
    return make_finding(
        c,
        DOCUMENTATION,
        "info",
        f"Procedure record incomplete: {len(missing)} documentation item(s) missing before discharge",
        (f"Still missing: {'; '.join(missing)}.",),
        ("Also state cement viscosity at injection, radiation dose (DAP) and fluoroscopy time.",),
        CITE_DOCUMENTATION,
        {},
    )


def bone_health(c: DischargeContext) -> DischargeFinding | None:
    if osteoporosis_therapy(c.facts, c.policy, c.now).any:
        return None
    if oncology_condition(c.facts, c.now) is not None:
        return None  # oncology manages bone health in myeloma and skeletal metastasis
    dxa = recent_dxa(c.facts, c.now, c.policy.value("dxa_interval_years"))
    return make_finding(
        c,
        BONE_HEALTH,
        "warning",
        "No osteoporosis therapy active or planned: agree a bone-health plan before discharge",
        ("No anti-resorptive or anabolic therapy active or planned (calcium/vitamin D alone do not count).",),
        bone_steps(c.policy, dxa),
        CITE_BONE,
        {
            "zoledronic_interval_months": c.policy.value("zoledronic_interval_months"),
            "denosumab_interval_months": c.policy.value("denosumab_interval_months"),
            "dxa_interval_years": c.policy.value("dxa_interval_years"),
        },
        evidence=(c.va.evidence, *((dxa,) if dxa else ())),
        orders=bone_orders(c.facts, c.policy, c.now),
        recommended=("dxa",),
        reason=f"Bone-health plan after vertebral augmentation on {fmt_date(va_time(c.va))}",
        overrides=BONE_OVERRIDES,
    )


def followup(c: DischargeContext) -> DischargeFinding:
    return make_finding(
        c,
        FOLLOWUP,
        "info",
        "Book follow-up: clinical review at 2–6 weeks, bone health and fracture screen at 3–6 months",
        (),
        FOLLOWUP_LINES,
        CITE_FOLLOWUP,
        {},
    )


Rule = Callable[[DischargeContext], DischargeFinding | None]
# (rule id, prefetch keys whose failure makes the rule's "nothing found" unknown, rule)
RULES: tuple[tuple[str, frozenset[str], Rule], ...] = (
    (NEURO_EXAM_MISSING, frozenset({"procedures", "examObservations"}), neuro_exam_missing),
    (RED_FLAGS, frozenset(), red_flags),
    (DOCUMENTATION, frozenset(), documentation),
    (BONE_HEALTH, frozenset({"medications", "medicationStatements", "conditions"}), bone_health),
    (FOLLOWUP, frozenset(), followup),
)
