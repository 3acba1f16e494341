"""`va-postprocedure`: complication watch after vertebral augmentation (encounter-start, patient-view).

When a patient who had a vertebral augmentation (VA: vertebroplasty/kyphoplasty) comes back, this service
looks for complications the chapter's Algorithms 1–3 and the increased-pain summary tell us to act on:
pulmonary cement embolism, new neurological deficit, infection, hemorrhage, pleural injury, increased pain,
adjacent-level fracture, cement hypersensitivity, untreated osteoporosis, and otherwise a follow-up reminder.

Time is what separates a complication from history. A finding counts only when it is dated after a VA's
start and inside the rule's window from the most recent VA before it (the "anchor"); anything before the
VA is baseline. The shared timing and bone-health helpers live here and are reused by `hooks.va_discharge`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from cds_service.contracts import (
    CardSpec,
    HookInput,
    Indicator,
    OverrideReasonSpec,
    RuleDoc,
    ServiceDefinition,
    SuggestionSpec,
    md_escape,
)
from fhir_mappings.facts import (
    ClinicalFacts,
    ConditionFact,
    Evidence,
    Measurement,
    MedicationFact,
    ProcedureFact,
)
from hooks.common import data_unavailable_card, fmt_date, order_suggestions
from hooks.orders import bone_cement_allergy
from hooks.policy import Policy

SERVICE_IDS: dict[str, str] = {  # one id per hook (catalog V2.1)
    "encounter-start": "va-postprocedure-encounter-start",
    "patient-view": "va-postprocedure-patient-view",
}
HOOKS = ("encounter-start", "patient-view")

PCE = "post.pce.suspected"
NEURO = "post.neuro.deficit"
INFECTION = "post.infection.suspected"
HEMORRHAGE = "post.hemorrhage.suspected"
PLEURAL = "post.pleural.suspected"
PAIN = "post.pain.increased"
FRACTURE = "post.fracture.adjacent"
HYPERSENSITIVITY = "post.hypersensitivity"
BONE_HEALTH = "post.bone-health.untreated"
FOLLOWUP = "post.followup"
POST_RULE_IDS = (
    PCE,
    NEURO,
    INFECTION,
    HEMORRHAGE,
    PLEURAL,
    PAIN,
    FRACTURE,
    HYPERSENSITIVITY,
    BONE_HEALTH,
    FOLLOWUP,
)

# Procedure statuses that mean the VA actually happened (the catalog: completed or in-progress).
VA_DONE_STATUSES = frozenset({"completed", "in-progress"})
DAYS_PER_MONTH = 365.25 / 12

# Condition concept ids (fhir_mappings value sets) each rule reads.
NEURO_CONCEPTS = (
    "new-motor-deficit",
    "radiculopathy",
    "myelopathy",
    "saddle-anesthesia",
    "bowel-bladder-dysfunction",
    "cord-compression",
    "cauda-equina",
)
PCE_CONCEPTS = ("pulmonary-embolism", "dyspnea", "pleuritic-pain", "chest-pain", "hypoxemia")
INFECTION_CONCEPTS = (
    "discitis",
    "vertebral-osteomyelitis",
    "epidural-abscess",
    "wound-infection",
    "sepsis-bacteremia",
    "spondylitis",
)
HEMORRHAGE_CONCEPTS = ("hemothorax", "hemorrhage")
PLEURAL_CONCEPTS = ("pneumothorax", "hemothorax")
PLEURAL_SYMPTOMS = ("pleuritic-pain", "dyspnea", "chest-pain")
HYPERSENSITIVITY_CONCEPTS = ("anaphylaxis", "hypersensitivity-reaction")

# Injectable anti-osteoporosis agents count as therapy for their dosing interval after the last dose.
INJECTABLE_INTERVAL_KEYS = {
    "zoledronic acid": "zoledronic_interval_months",
    "zoledronate": "zoledronic_interval_months",
    "denosumab": "denosumab_interval_months",
}
# Statuses under which a medication record says nothing about therapy being given.
_NOT_GIVEN = frozenset({"entered-in-error", "cancelled", "not-taken", "stopped", "draft", "unknown"})
_DXA_TEXT = re.compile(r"\b(dxa|dexa|densitometr\w*|bone (mineral )?density)\b", re.IGNORECASE)

POST_OVERRIDES = (
    OverrideReasonSpec("already-evaluated", "Already evaluated — complication excluded or being managed"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
    OverrideReasonSpec("patient-declined", "Patient declined the work-up — documented"),
)
BONE_OVERRIDES = (
    OverrideReasonSpec("therapy-elsewhere", "Osteoporosis therapy documented outside this EHR"),
    OverrideReasonSpec("contraindicated", "Therapy contraindicated or declined — documented"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient (e.g. non-osteoporotic indication)"),
)

FOLLOWUP_LINES = (
    "2–6 weeks: clinical review — pain and function (VAS/ODI), analgesic use, wound check.",
    "Ask about red flags: fever, wound problems, new radicular pain or weakness, "
    "dyspnea or pleuritic chest pain.",
    "Image only for new or worsening pain or neurological symptoms.",
    "3–6 months: bone-health review and screening for new fractures (DXA/FRAX if not recent).",
    "Physiotherapy and falls-clinic referral when indicated.",
)


# --------------------------------------------------------------------------------------------------------
# Timing: which VA anchors a finding
# --------------------------------------------------------------------------------------------------------


def va_time(proc: ProcedureFact) -> datetime | None:
    """When the VA started (its end when the start is not recorded)."""
    return proc.start or proc.end


def va_end(proc: ProcedureFact) -> datetime | None:
    """When the VA ended (its start when the end is not recorded)."""
    return proc.end or proc.start


def _is_date_only(when: datetime) -> bool:
    # A FHIR date without a time arrives as midnight UTC; we cannot tell it from a real midnight.
    return when.timetz().replace(tzinfo=None) == time(0, 0)


@dataclass(frozen=True, slots=True)
class VaTimeline:
    """The dated VA procedures (completed or in-progress, not in the future), oldest first."""

    vas: tuple[ProcedureFact, ...]

    @classmethod
    def from_facts(cls, facts: ClinicalFacts, now: datetime) -> VaTimeline:
        dated = [
            p
            for p in facts.procedures
            if p.is_va and p.status in VA_DONE_STATUSES and (t := va_time(p)) is not None and t <= now
        ]
        dated.sort(key=lambda p: va_time(p) or now)
        return cls(tuple(dated))

    @property
    def latest(self) -> ProcedureFact | None:
        return self.vas[-1] if self.vas else None

    def anchor(self, when: datetime, *, same_day_date_only: bool = False) -> ProcedureFact | None:
        """The most recent VA that started before `when` (None: the finding is baseline, not a complication).

        With `same_day_date_only`, a date-only time (midnight) on the VA's own calendar day is taken as
        after the VA: a condition coded with a date but no time on the procedure day is far more likely a
        complication of that procedure than a pre-existing one, and missing it would be the unsafe error.
        """
        found: ProcedureFact | None = None
        for proc in self.vas:
            start = va_time(proc)
            assert start is not None  # from_facts keeps dated VAs only
            after = start < when
            if not after and same_day_date_only and _is_date_only(when) and when.date() == start.date():
                after = True
            if after:
                found = proc
        return found

    def anchor_in_window(
        self, when: datetime | None, window_days: float, now: datetime, *, same_day_date_only: bool = False
    ) -> ProcedureFact | None:
        """The anchoring VA when `when` lies after it and within `window_days` of its start (inclusive)."""
        if when is None or when > now:
            return None
        proc = self.anchor(when, same_day_date_only=same_day_date_only)
        if proc is None:
            return None
        start = va_time(proc)
        assert start is not None
        if when - start > timedelta(days=window_days):
            return None
        return proc


def describe_va(proc: ProcedureFact) -> str:
    """ "VA on 2026-11-02 at T12" — Markdown-safe."""
    where = f" at {md_escape(proc.level)}" if proc.level else ""
    return f"VA on {fmt_date(va_time(proc))}{where}"


def evidence_line(ev: Evidence) -> str:
    return f"- {md_escape(ev.summary)} ({md_escape(ev.reference)})"


def _num(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------------------------------------
# Bone health (shared with va-discharge)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoneTherapy:
    current: tuple[MedicationFact, ...]  # active anti-osteoporosis therapy, or an injectable within interval
    planned: tuple[MedicationFact, ...]  # drafted in this request


def osteoporosis_therapy(facts: ClinicalFacts, policy: Policy, now: datetime) -> BoneTherapy:
    """Anti-resorptive/anabolic therapy on the record (calcium/vitamin D alone are not therapy)."""
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
    # A drug drafted in this request counts as planned therapy (the catalog's "none planned").
    planned = [m for m in facts.draft_medications if m.drug_class == "osteoporosis"]
    return BoneTherapy(tuple(current), tuple(planned))


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


def bone_health_suggestions(inp: HookInput, policy: Policy, reason: str) -> tuple[SuggestionSpec, ...]:
    """DXA only when none in the DXA interval; falls clinic and endocrinology; existing orders skipped."""
    concepts: list[str] = []
    if recent_dxa(inp.facts, inp.now, policy.value("dxa_interval_years")) is None:
        concepts.append("dxa")
    concepts += ["consult-falls-clinic", "consult-endocrinology"]
    return order_suggestions(inp, concepts, reason=reason, recommended=("dxa",))


# --------------------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One dated finding after a VA: a Markdown-safe line and where it came from."""

    line: str
    evidence: Evidence
    anchor: ProcedureFact
    severe: bool = True  # infection: False for laboratory signs alone


@dataclass(frozen=True, slots=True)
class _Ctx:
    inp: HookInput
    policy: Policy
    timeline: VaTimeline

    @property
    def facts(self) -> ClinicalFacts:
        return self.inp.facts

    @property
    def now(self) -> datetime:
        return self.inp.now

    def window(self, rule_id: str) -> float:
        return self.policy.window_days(rule_id)

    def conditions(
        self, concepts: Iterable[str], rule_id: str, *, current_only: bool = True
    ) -> list[tuple[ConditionFact, ProcedureFact]]:
        """Conditions of these concepts whose onset lies in the rule's window after a VA.

        Acute-complication rules read only current conditions (`current_only`): a resolved one is history.
        Event rules (hypersensitivity, a new fracture) count the event whatever its status, because its
        consequence (allergy record, bone-health plan) outlives the episode.
        """
        out: list[tuple[ConditionFact, ProcedureFact]] = []
        for cond in self.facts.conditions_with(concepts):
            if current_only and not cond.active:
                continue
            proc = self.timeline.anchor_in_window(
                cond.onset, self.window(rule_id), self.now, same_day_date_only=True
            )
            if proc is not None:
                out.append((cond, proc))
        return out

    def measurements(self, kind: str, rule_id: str) -> list[tuple[Measurement, ProcedureFact]]:
        """Usable measurements of one kind in the rule's window after a VA, newest first."""
        out: list[tuple[Measurement, ProcedureFact]] = []
        for m in self.facts.measurements_of(kind):
            proc = self.timeline.anchor_in_window(m.time, self.window(rule_id), self.now)
            if proc is not None and m.value is not None:
                out.append((m, proc))
        return out


def _cond_finding(cond: ConditionFact, proc: ProcedureFact, severe: bool = True) -> Finding:
    line = f"{md_escape(cond.display or 'Condition')} — onset {fmt_date(cond.onset)}"
    return Finding(line, cond.evidence, proc, severe)


def _meas_finding(m: Measurement, label: str, unit: str, proc: ProcedureFact, severe: bool = True) -> Finding:
    value = _num(m.value) if m.value is not None else "?"
    return Finding(f"{label} {value}{unit} on {fmt_date(m.time)}", m.evidence, proc, severe)


def _card_detail(
    why: str,
    findings: Sequence[Finding],
    steps: Sequence[str],
    policy_lines: Sequence[str],
    citation: str,
    *,
    extra: str = "",
) -> str:
    """Card Markdown: why, evidence (by anchoring VA), the algorithm's steps in order, policy, source."""
    parts = [why, "", "**Evidence**"]
    seen: set[str] = set()
    for f in findings:
        ref = f.anchor.evidence.reference
        if ref not in seen:
            seen.add(ref)
            parts.append(f"- Anchor: {describe_va(f.anchor)} ({md_escape(ref)})")
        parts.append(f"- {f.line} ({md_escape(f.evidence.reference)})")
    parts += ["", "**What to do, in order**"]
    parts += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    if extra:
        parts += ["", extra]
    if policy_lines:
        parts += ["", "**Policy values used:** " + "; ".join(policy_lines) + "."]
    parts += ["", f"*Source: {citation}.*"]
    return "\n".join(parts)


def _reason(rule_text: str, proc: ProcedureFact) -> str:
    return f"{rule_text} after vertebral augmentation on {fmt_date(va_time(proc))}"


def _evidence(findings: Sequence[Finding]) -> tuple[Evidence, ...]:
    out: list[Evidence] = []
    for f in findings:
        for ev in (f.anchor.evidence, f.evidence):
            if ev not in out:
                out.append(ev)
    return tuple(out)


# --------------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------------

CITE_PCE = (
    "Chapter §3.3.4, Algorithm 2; MASTER CHECKLIST focused algorithm for suspected PCE; "
    "refs [10,25,33–36]; Increased-pain summary (vital signs for embolism)"
)
CITE_NEURO = (
    "Chapter §3.3.3 (posterior canal leakage) and §3.2.2; MASTER CHECKLIST 'Post-procedure & Discharge'; "
    "ref [29]; Increased-pain summary (red flags)"
)
CITE_INFECTION = "Chapter §4.2, Algorithm 3; MASTER CHECKLIST 'Post-procedure & Discharge'; refs [12,37–39]"
CITE_HEMORRHAGE = "Chapter §3.2.3 (anterior cortical breach: red flags, first actions, imaging); refs [21–24]"
CITE_PLEURAL = "Chapter §3.2.3 (pleural and lung injury at thoracic levels); refs [41–45]"
CITE_PAIN = "Increased-pain summary; Chapter §4.3 and §5; refs [5,25–28]"
CITE_FRACTURE = "Chapter §4.3 and §3.3.1 (adjacent-level fractures); refs [5,25–28]"
CITE_HYPERSENSITIVITY = "Chapter §3.1, Algorithm 1; refs [16,17]"
CITE_BONE = (
    "Chapter §5 (bone-health stewardship) and §4.3; MASTER CHECKLIST 'Post-procedure & Discharge'; "
    "refs [20,40]"
)
CITE_FOLLOWUP = "Chapter §5 (follow-up pathway); MASTER CHECKLIST 'Post-procedure & Discharge'; ref [40]"


def _rule_pce(c: _Ctx) -> CardSpec | None:
    p = c.policy
    spo2_min, rr_max, hr_max = (
        p.value("spo2_min_percent"),
        p.value("resp_rate_max"),
        p.value("heart_rate_max"),
    )
    findings: list[Finding] = []
    hypoxic = False
    for m, proc in c.measurements("spo2", PCE):
        if m.value is not None and m.value < spo2_min:
            findings.append(_meas_finding(m, "SpO₂", " %", proc))
            hypoxic = True
    for m, proc in c.measurements("resp_rate", PCE):
        if m.value is not None and m.value > rr_max:
            findings.append(_meas_finding(m, "Respiratory rate", "/min", proc))
    symptoms = c.conditions(PCE_CONCEPTS, PCE)
    dyspnea = any("dyspnea" in cond.concepts for cond, _ in symptoms)
    if dyspnea:
        # Tachycardia alone is non-specific after a procedure; with new dyspnea it points at embolism.
        for m, proc in c.measurements("heart_rate", PCE):
            if m.value is not None and m.value > hr_max:
                findings.append(_meas_finding(m, "Heart rate", "/min", proc))
    findings += [_cond_finding(cond, proc) for cond, proc in symptoms]
    if not findings:
        return None
    symptomatic = hypoxic or any(
        cond.concepts & {"dyspnea", "pleuritic-pain", "chest-pain", "hypoxemia"} for cond, _ in symptoms
    )
    steps = (
        "Give oxygen; record vital signs, continuous SpO₂ and a 12-lead ECG.",
        "Get a chest X-ray.",
        "Proceed to CT pulmonary angiography when there are symptoms or low oxygen saturation.",
        "Grade the burden: small and asymptomatic → observe; symptomatic or segmental/central → consider "
        "anticoagulation if bleeding risk allows; massive or intracardiac cement, or valve entrapment → "
        "urgent interventional radiology / cardiothoracic review for retrieval.",
        "Record the event and discuss prevention for any future augmentation (thicker cement, slower "
        "injection, smaller volume, vertebral lavage).",
    )
    policy_used = {
        "spo2_min_percent": spo2_min,
        "resp_rate_max": rr_max,
        "heart_rate_max": hr_max,
        "window_days": c.window(PCE),
    }
    anchor = findings[0].anchor
    return CardSpec(
        rule_id=PCE,
        indicator="critical",
        summary=f"Possible pulmonary cement embolism after the VA of {fmt_date(va_time(anchor))}: assess now",
        detail=_card_detail(
            "Respiratory or cardiopulmonary findings after vertebral augmentation: treat as a possible "
            "pulmonary cement embolism (PCE) until shown otherwise.",
            findings,
            steps,
            [
                f"SpO₂ < {_num(spo2_min)} %",
                f"respiratory rate > {_num(rr_max)}/min",
                f"heart rate > {_num(hr_max)}/min with dyspnea",
                f"window {_num(c.window(PCE))} days after the VA",
            ],
            CITE_PCE,
        ),
        citation=CITE_PCE,
        evidence=_evidence(findings),
        policy_used=policy_used,
        suggestions=order_suggestions(
            c.inp,
            ("chest-xray", "ctpa", "ecg"),
            reason=_reason("Suspected pulmonary cement embolism", anchor),
            recommended=("chest-xray", "ecg", *(("ctpa",) if symptomatic else ())),
        ),
        override_reasons=POST_OVERRIDES,
    )


def _rule_neuro(c: _Ctx) -> CardSpec | None:
    found = c.conditions(NEURO_CONCEPTS, NEURO)
    if not found:
        return None
    findings = [_cond_finding(cond, proc) for cond, proc in found]
    anchor = findings[0].anchor
    steps = (
        "Presume cement has leaked into the canal or a foramen and work to exclude it; examine and record "
        "motor, sensory, saddle and sphincter function.",
        "Consider a short course of high-dose corticosteroids as a bridge if not contraindicated.",
        "Get urgent MRI or CT of the spine to locate the cement and any compression.",
        "Compressive cement with a matching deficit → spine surgery for early decompression and removal; "
        "small non-compressive deposits without symptoms → observe closely and re-image if anything changes.",
    )
    return CardSpec(
        rule_id=NEURO,
        indicator="critical",
        summary=f"New neurological deficit after the VA of {fmt_date(va_time(anchor))}: urgent spine imaging",
        detail=_card_detail(
            "A new neurological finding was recorded after vertebral augmentation.",
            findings,
            steps,
            [f"window {_num(c.window(NEURO))} days after the VA"],
            CITE_NEURO,
        ),
        citation=CITE_NEURO,
        evidence=_evidence(findings),
        policy_used={"window_days": c.window(NEURO)},
        suggestions=order_suggestions(
            c.inp,
            ("ct-spine", "mri-spine-stir", "consult-spine-surgery"),
            reason=_reason("New neurological deficit", anchor),
            recommended=("ct-spine", "mri-spine-stir", "consult-spine-surgery"),
        ),
        override_reasons=POST_OVERRIDES,
    )


def _rule_infection(c: _Ctx) -> CardSpec | None:
    p = c.policy
    fever, wbc_max = p.value("fever_celsius"), p.value("wbc_max")
    crp_max, esr_max = p.value("crp_max_mg_l"), p.value("esr_max_mm_h")
    findings: list[Finding] = []
    febrile = False
    for m, proc in c.measurements("temperature", INFECTION):
        if m.value is not None and m.value >= fever:
            findings.append(_meas_finding(m, "Temperature", " °C", proc))
            febrile = True
    conds = c.conditions(INFECTION_CONCEPTS, INFECTION)
    findings += [_cond_finding(cond, proc) for cond, proc in conds]
    for m in c.facts.measurements:
        # A positive blood culture after the VA is an infection, not merely a lab sign.
        if m.kind == "blood_culture" and m.positive:
            bc_anchor = c.timeline.anchor_in_window(m.time, c.window(INFECTION), c.now)
            if bc_anchor is not None:
                line = f"Positive blood culture on {fmt_date(m.time)}"
                findings.append(Finding(line, m.evidence, bc_anchor))
    for kind, label, unit, limit in (
        ("wbc", "WBC", " ×10⁹/L", wbc_max),
        ("crp", "CRP", " mg/L", crp_max),
        ("esr", "ESR", " mm/h", esr_max),
    ):
        for m, proc in c.measurements(kind, INFECTION):
            if m.value is not None and m.value > limit:
                findings.append(_meas_finding(m, label, unit, proc, severe=False))
    if not findings:
        return None
    critical = any(f.severe for f in findings)
    anchor = findings[0].anchor
    steps = (
        "Blood tests: CBC, CRP, ESR — and blood cultures when there is fever.",
        "Contrast-enhanced spine MRI to detect disc or bone infection and epidural or paravertebral "
        "collections.",
        "When the patient is stable, obtain image-guided aspiration or biopsy for culture before "
        "antibiotics; if unstable, start broad intravenous antibiotics and narrow them later.",
        "Ask spine surgery to see the patient for a neurological deficit, instability or deformity, an "
        "abscess that cannot be drained percutaneously, or failure of intravenous therapy.",
        "Expect a total antibiotic course of roughly 6–12 weeks, adjusted to the organism and the response.",
    )
    concepts = ["cbc", "crp", "esr"]
    if febrile:
        concepts.append("blood-cultures")
    concepts += ["mri-spine-contrast", "consult-infectious-diseases"]
    if any("epidural-abscess" in cond.concepts for cond, _ in conds):
        concepts.append("consult-spine-surgery")
    if critical:
        summary = (
            f"Possible infection after the VA of {fmt_date(va_time(anchor))}: start the infection work-up"
        )
        why = "Fever or an infection diagnosis after vertebral augmentation."
    else:
        summary = f"Raised inflammatory labs after the VA of {fmt_date(va_time(anchor))}: exclude infection"
        why = (
            "Laboratory signs of inflammation after vertebral augmentation, without fever or an infection "
            "diagnosis on record. Correlate clinically and exclude a spinal infection."
        )
    return CardSpec(
        rule_id=INFECTION,
        indicator="critical" if critical else "warning",
        summary=summary,
        detail=_card_detail(
            why,
            findings,
            steps,
            [
                f"fever ≥ {_num(fever)} °C",
                f"WBC > {_num(wbc_max)} ×10⁹/L",
                f"CRP > {_num(crp_max)} mg/L",
                f"ESR > {_num(esr_max)} mm/h",
                f"window {_num(c.window(INFECTION))} days after the VA",
            ],
            CITE_INFECTION,
        ),
        citation=CITE_INFECTION,
        evidence=_evidence(findings),
        policy_used={
            "fever_celsius": fever,
            "wbc_max": wbc_max,
            "crp_max_mg_l": crp_max,
            "esr_max_mm_h": esr_max,
            "window_days": c.window(INFECTION),
        },
        suggestions=order_suggestions(
            c.inp,
            concepts,
            reason=_reason("Suspected spinal infection", anchor),
            recommended=("cbc", "crp", "mri-spine-contrast", *(("blood-cultures",) if febrile else ())),
        ),
        override_reasons=POST_OVERRIDES,
    )


def _rule_hemorrhage(c: _Ctx) -> CardSpec | None:
    p = c.policy
    drop_min, sbp_min = p.value("hemoglobin_drop_g_dl"), p.value("systolic_bp_min")
    findings: list[Finding] = []
    for m, proc in c.measurements("hemoglobin", HEMORRHAGE):
        start = va_time(proc)
        # Baseline = the last value at or before the anchoring VA's start (the pre-procedure value).
        baseline = c.facts.latest("hemoglobin", until=start)
        if baseline is None or baseline.value is None or m.value is None:
            continue
        drop = baseline.value - m.value
        if drop >= drop_min:
            findings.append(
                Finding(
                    f"Hemoglobin {_num(m.value)} g/dL on {fmt_date(m.time)}, down {drop:.1f} g/dL from "
                    f"{_num(baseline.value)} g/dL before the VA ({fmt_date(baseline.time)}; "
                    f"{md_escape(baseline.evidence.reference)})",
                    m.evidence,
                    proc,
                )
            )
    for m, proc in c.measurements("systolic_bp", HEMORRHAGE):
        if m.value is not None and m.value < sbp_min:
            findings.append(_meas_finding(m, "Systolic BP", " mmHg", proc))
    findings += [_cond_finding(cond, proc) for cond, proc in c.conditions(HEMORRHAGE_CONCEPTS, HEMORRHAGE)]
    if not findings:
        return None
    anchor = findings[0].anchor
    steps = (
        "Assume active bleeding and act before it is confirmed: two large-bore IV lines, cross-match, "
        "resuscitate and transfuse as needed.",
        "Reverse anticoagulation where indicated (vitamin K, PCC/FFP, platelets).",
        "Bedside ultrasound for hemothorax or retroperitoneal fluid.",
        "CT angiography of chest, abdomen and pelvis to find the source; an unstable patient goes straight "
        "to interventional radiology or theatre.",
        "Involve interventional radiology and vascular surgery early; after embolisation, schedule "
        "neurological checks for cord ischemia.",
    )
    return CardSpec(
        rule_id=HEMORRHAGE,
        indicator="critical",
        summary=f"Possible hemorrhage after the VA of {fmt_date(va_time(anchor))}: treat as active bleeding",
        detail=_card_detail(
            "Signs of bleeding after vertebral augmentation (needle injury to segmental, intercostal or "
            "large vessels, or a retroperitoneal/psoas hematoma).",
            findings,
            steps,
            [
                f"hemoglobin drop ≥ {_num(drop_min)} g/dL vs the last pre-procedure value",
                f"systolic BP < {_num(sbp_min)} mmHg",
                f"window {_num(c.window(HEMORRHAGE))} days after the VA",
            ],
            CITE_HEMORRHAGE,
        ),
        citation=CITE_HEMORRHAGE,
        evidence=_evidence(findings),
        policy_used={
            "hemoglobin_drop_g_dl": drop_min,
            "systolic_bp_min": sbp_min,
            "window_days": c.window(HEMORRHAGE),
        },
        suggestions=order_suggestions(
            c.inp,
            (
                "cta-cap",
                "cbc",
                "type-and-screen",
                "consult-interventional-radiology",
                "consult-vascular-surgery",
            ),
            reason=_reason("Suspected hemorrhage", anchor),
            recommended=("cta-cap", "cbc", "type-and-screen"),
        ),
        override_reasons=POST_OVERRIDES,
    )


def pleural_level_applies(proc: ProcedureFact) -> bool:
    """Thoracic (T1–T12) or unknown level → the pleura may have been at risk (unknown fires, for safety)."""
    if proc.region is not None:
        return proc.region == "thoracic"
    if proc.level:
        return proc.level.strip().upper().startswith("T")
    return True


def _rule_pleural(c: _Ctx) -> CardSpec | None:
    spo2_min = c.policy.value("spo2_min_percent")
    findings: list[Finding] = []
    hemothorax = False
    for cond, proc in c.conditions(PLEURAL_CONCEPTS, PLEURAL):
        if pleural_level_applies(proc):
            findings.append(_cond_finding(cond, proc))
            hemothorax = hemothorax or "hemothorax" in cond.concepts
    # Pleuritic pain or dyspnea counts only together with desaturation after the same VA.
    # Desaturation = SpO₂ below the policy minimum or a recorded hypoxemia, after the same VA.
    desats = [
        Finding(f"SpO₂ {_num(m.value or 0)} % on {fmt_date(m.time)}", m.evidence, proc)
        for m, proc in c.measurements("spo2", PLEURAL)
        if m.value is not None and m.value < spo2_min
    ]
    desats += [_cond_finding(cond, proc) for cond, proc in c.conditions(("hypoxemia",), PLEURAL)]
    for cond, proc in c.conditions(PLEURAL_SYMPTOMS, PLEURAL):
        same = [d for d in desats if d.anchor is proc]
        if not same or not pleural_level_applies(proc):
            continue
        findings.append(_cond_finding(cond, proc))
        for d in same:
            if all(f.evidence != d.evidence for f in findings):
                findings.append(d)
    if not findings:
        return None
    anchor = findings[0].anchor
    steps = (
        "Assess breathing and hemodynamics; resuscitate if unstable.",
        "Confirm with point-of-care ultrasound and/or a chest X-ray.",
        "Pneumothorax: small and stable → oxygen and observation; symptomatic or large → aspiration or chest "
        "drain; persistent air leak → thoracic surgery (BTS 2023).",
        "Hemothorax: chest drain and resuscitation; CT angiography for a bleeding intercostal or segmental "
        "artery; ongoing bleeding or retained blood → embolisation or early VATS.",
    )
    concepts = ["chest-xray", *(("cta-cap",) if hemothorax else ())]
    return CardSpec(
        rule_id=PLEURAL,
        indicator="critical",
        summary=f"Possible pleural injury after the VA of {fmt_date(va_time(anchor))}: confirm with imaging",
        detail=_card_detail(
            "Pleural findings after a thoracic-level (or level-unknown) vertebral augmentation.",
            findings,
            steps,
            [
                f"SpO₂ < {_num(spo2_min)} % with pleuritic pain/dyspnea",
                f"window {_num(c.window(PLEURAL))} days after the VA",
                "thoracic or unknown level only",
            ],
            CITE_PLEURAL,
        ),
        citation=CITE_PLEURAL,
        evidence=_evidence(findings),
        policy_used={"spo2_min_percent": spo2_min, "window_days": c.window(PLEURAL)},
        suggestions=order_suggestions(
            c.inp,
            concepts,
            reason=_reason("Suspected pneumothorax/hemothorax", anchor),
            recommended=("chest-xray",),
        ),
        override_reasons=POST_OVERRIDES,
    )


def _rule_pain(c: _Ctx) -> CardSpec | None:
    rise_min = c.policy.value("pain_rise_points")
    window = c.window(PAIN)
    findings: list[Finding] = []
    scores = [
        m for m in c.facts.measurements_of("pain") if m.value is not None and m.time and m.time <= c.now
    ]
    if scores:
        latest = scores[0]  # newest first
        assert latest.time is not None and latest.value is not None
        proc = c.timeline.anchor_in_window(latest.time, window, c.now)
        if proc is not None:
            start = va_time(proc)
            assert start is not None
            before = [
                m
                for m in scores[1:]
                if m.time is not None and start < m.time < latest.time and m.value is not None
            ]
            if before:
                nadir = min(before, key=lambda m: m.value or 0.0)
                assert nadir.value is not None
                rise = latest.value - nadir.value
                if rise >= rise_min:
                    findings.append(
                        Finding(
                            f"Pain {_num(latest.value)}/10 on {fmt_date(latest.time)}, up {rise:g} from the "
                            f"post-procedure low of {_num(nadir.value)}/10 on {fmt_date(nadir.time)} "
                            f"({md_escape(nadir.evidence.reference)})",
                            latest.evidence,
                            proc,
                        )
                    )
    findings += [_cond_finding(cond, proc) for cond, proc in c.conditions(("back-pain",), PAIN)]
    if not findings:
        return None
    anchor = findings[0].anchor
    steps = (
        "Get cross-sectional imaging: MRI with STIR (or T2 fat-saturated) for a new adjacent-level fracture; "
        "CT when cement leakage is the concern.",
        "Examine lower-limb motor and sensory function for new radiculopathy or myelopathy.",
        "Check vital signs for embolism (tachycardia, hypoxia, chest pain).",
        "Weigh the usual causes: new adjacent-level fracture (most common), cement leakage, transient "
        "post-procedural pain.",
        "A confirmed new acute fracture with pain refractory to conservative care may justify augmentation "
        "at the new level; review osteoporosis treatment.",
    )
    return CardSpec(
        rule_id=PAIN,
        indicator="warning",
        summary=f"Pain has increased since the VA of {fmt_date(va_time(anchor))}: image and examine",
        detail=_card_detail(
            "Back pain rose after initial improvement, or new back pain was recorded, after vertebral "
            "augmentation.",
            findings,
            steps,
            [
                f"pain rise ≥ {_num(rise_min)} points over the post-procedure low",
                f"window {_num(window)} days after the VA",
            ],
            CITE_PAIN,
        ),
        citation=CITE_PAIN,
        evidence=_evidence(findings),
        policy_used={"pain_rise_points": rise_min, "window_days": window},
        suggestions=order_suggestions(
            c.inp,
            ("mri-spine-stir",),
            reason=_reason("Increased back pain", anchor),
            recommended=("mri-spine-stir",),
        ),
        override_reasons=POST_OVERRIDES,
    )


def _rule_fracture(c: _Ctx) -> CardSpec | None:
    found = [
        (cond, proc)
        for cond, proc in c.conditions(("vertebral-fracture",), FRACTURE, current_only=False)
        if not cond.followup_encounter  # ICD-10-CM 7th character D/G/K/P/S: an old fracture revisited
    ]
    if not found:
        return None
    findings = [_cond_finding(cond, proc) for cond, proc in found]
    anchor = findings[0].anchor
    steps = (
        "Confirm the new fracture and its acuity with MRI (STIR edema) and compare the level with the "
        "treated one.",
        "Review what drives adjacent-level fractures: bone quality, cement distribution, intradiscal "
        "leakage.",
        "Start or optimise osteoporosis therapy (anti-resorptive or anabolic per fracture risk) with calcium "
        "and vitamin D.",
        "Treat conservatively first; consider augmentation of the new level if pain stays refractory.",
    )
    return CardSpec(
        rule_id=FRACTURE,
        indicator="warning",
        summary=f"New vertebral fracture after the VA of {fmt_date(va_time(anchor))}: review bone health",
        detail=_card_detail(
            "A vertebral fracture was recorded with onset after vertebral augmentation.",
            findings,
            steps,
            [f"window {_num(c.window(FRACTURE))} days after the VA"],
            CITE_FRACTURE,
        ),
        citation=CITE_FRACTURE,
        evidence=_evidence(findings),
        policy_used={"window_days": c.window(FRACTURE)},
        suggestions=order_suggestions(
            c.inp,
            ("mri-spine-stir",),
            reason=_reason("New vertebral fracture", anchor),
            recommended=("mri-spine-stir",),
        ),
        override_reasons=POST_OVERRIDES,
    )


def _rule_hypersensitivity(c: _Ctx) -> CardSpec | None:
    found = c.conditions(HYPERSENSITIVITY_CONCEPTS, HYPERSENSITIVITY, current_only=False)
    if not found:
        return None
    findings = [_cond_finding(cond, proc) for cond, proc in found]
    anchor = findings[0].anchor
    steps = (
        "Halt cement injection at once; summon help and make sure airway and venous access are secure.",
        "Treat as anaphylaxis per protocol: IM epinephrine, antihistamine, corticosteroid, fluids.",
        "Draw serum tryptase 1–2 hours after onset; write down which cement product, additives and "
        "antibiotic were used.",
        "After the event, refer for patch testing / lymphocyte transformation test and plan how to avoid "
        "re-exposure.",
    )
    reaction_time = min((cond.onset for cond, _ in found if cond.onset), default=None)
    tryptase_done = reaction_time is not None and bool(
        c.facts.measurements_of("tryptase", since=reaction_time)
    )
    suggestions = (
        ()
        if tryptase_done
        else order_suggestions(
            c.inp,
            ("tryptase",),
            reason=_reason("Suspected cement hypersensitivity", anchor),
            recommended=("tryptase",),
        )
    )
    already_recorded = any("bone-cement" in a.concepts and a.active for a in c.facts.allergies)
    if not already_recorded:
        # The reaction is on the record (the rule only fires on a recorded reaction): offer to document it
        # as an allergy so a future augmentation is flagged before cement is mixed.
        note = (
            f"Reaction recorded after vertebral augmentation on {fmt_date(va_time(anchor))} "
            f"({anchor.evidence.reference}); confirm with patch/LTT testing."
        )
        suggestions = (
            *suggestions,
            SuggestionSpec(
                label="Record allergy to bone cement (PMMA)",
                resources=(bone_cement_allergy(c.inp.patient_id, note=note),),
                description="Create an AllergyIntolerance to bone cement (PMMA and additives), unconfirmed",
            ),
        )
    extra = "Tryptase already resulted after the reaction: no new order suggested." if tryptase_done else ""
    return CardSpec(
        rule_id=HYPERSENSITIVITY,
        indicator="critical",
        summary=f"Reaction after the VA of {fmt_date(va_time(anchor))}: possible cement hypersensitivity",
        detail=_card_detail(
            "An anaphylactic or hypersensitivity reaction was recorded right after vertebral augmentation.",
            findings,
            steps,
            [f"window {_num(c.window(HYPERSENSITIVITY))} days after the VA"],
            CITE_HYPERSENSITIVITY,
            extra=extra,
        ),
        citation=CITE_HYPERSENSITIVITY,
        evidence=_evidence(findings),
        policy_used={"window_days": c.window(HYPERSENSITIVITY)},
        suggestions=suggestions,
        override_reasons=POST_OVERRIDES,
    )


def _rule_bone_health(c: _Ctx) -> CardSpec | None:
    latest = c.timeline.latest
    if latest is None:
        return None
    start = va_time(latest)
    assert start is not None
    window = c.window(BONE_HEALTH)
    if c.now - start > timedelta(days=window):
        return None
    therapy = osteoporosis_therapy(c.facts, c.policy, c.now)
    if therapy.current or therapy.planned:
        return None
    dxa_years = c.policy.value("dxa_interval_years")
    dxa = recent_dxa(c.facts, c.now, dxa_years)
    steps = (
        "Make sure calcium and vitamin D intake is sufficient (supplements alone are not osteoporosis "
        "treatment).",
        "Start anti-resorptive or anabolic therapy according to fracture risk (e.g. the NOGG framework).",
        f"Assess bone density: DXA/FRAX if none in the last {_num(dxa_years)} years"
        + (f" (last found: {md_escape(dxa.summary)})." if dxa else " (none found)."),
        "Screen for falls and sarcopenia; refer to a falls clinic and physiotherapy when indicated.",
    )
    inj = ", ".join(
        f"{name} within {_num(c.policy.value(key))} months"
        for name, key in (
            ("zoledronic acid", "zoledronic_interval_months"),
            ("denosumab", "denosumab_interval_months"),
        )
    )
    detail = "\n".join(
        [
            f"No anti-resorptive or anabolic therapy was found after the {describe_va(latest)} "
            f"({md_escape(latest.evidence.reference)}): no active order or statement, and no injectable dose "
            f"inside its interval ({inj}). Adjacent-level fractures are driven largely by bone quality.",
            "",
            "**What to do, in order**",
            *[f"{i}. {s}" for i, s in enumerate(steps, 1)],
            "",
            f"**Policy values used:** window {_num(window)} days after the VA; {inj}; "
            f"DXA interval {_num(dxa_years)} years.",
            "",
            f"*Source: {CITE_BONE}.*",
        ]
    )
    return CardSpec(
        rule_id=BONE_HEALTH,
        indicator="warning",
        summary="No osteoporosis therapy found after vertebral augmentation: start a bone-health plan",
        detail=detail,
        citation=CITE_BONE,
        evidence=(latest.evidence, *((dxa,) if dxa else ())),
        policy_used={
            "window_days": window,
            "zoledronic_interval_months": c.policy.value("zoledronic_interval_months"),
            "denosumab_interval_months": c.policy.value("denosumab_interval_months"),
            "dxa_interval_years": dxa_years,
        },
        suggestions=bone_health_suggestions(c.inp, c.policy, _reason("Osteoporosis not treated", latest)),
        override_reasons=BONE_OVERRIDES,
    )


def _rule_followup(c: _Ctx, unavailable_checks: Sequence[str]) -> CardSpec | None:
    latest = c.timeline.latest
    if latest is None:
        return None
    start = va_time(latest)
    assert start is not None
    window = c.window(FOLLOWUP)
    if c.now - start > timedelta(days=window):
        return None
    days = (c.now - start).days
    lines = [
        f"The last vertebral augmentation was {days} day(s) ago: {describe_va(latest)} "
        f"({md_escape(latest.evidence.reference)}). No complication card fired for this visit.",
        "",
        "**Follow-up plan**",
        *[f"{i}. {s}" for i, s in enumerate(FOLLOWUP_LINES, 1)],
    ]
    if unavailable_checks:
        lines += ["", "Some checks could not run (see the data-unavailable card): this is not an all-clear."]
    lines += [
        "",
        f"**Policy values used:** window {_num(window)} days after the VA.",
        "",
        f"*Source: {CITE_FOLLOWUP}.*",
    ]
    return CardSpec(
        rule_id=FOLLOWUP,
        indicator="info",
        summary=f"Follow-up after the VA of {fmt_date(start)}: review pain, red flags and bone health",
        detail="\n".join(lines),
        citation=CITE_FOLLOWUP,
        evidence=(latest.evidence,),
        policy_used={"window_days": window},
    )


# --------------------------------------------------------------------------------------------------------
# Service
# --------------------------------------------------------------------------------------------------------

_P = "{{context.patientId}}"
_VITALS = ",".join(
    f"http://loinc.org|{code}"
    for code in (
        "59408-5",
        "2708-6",
        "9279-1",
        "8867-4",
        "85354-9",
        "8480-6",
        "8310-5",
        "8331-1",
        "72514-3",
        "38208-5",
    )
)
_LABS = ",".join(
    f"http://loinc.org|{code}"
    for code in ("718-7", "6690-2", "26464-8", "1988-5", "30522-7", "30341-2", "4537-7", "600-7", "21582-2")
)
PREFETCH: dict[str, str] = {
    "patient": f"Patient/{_P}",
    # Not code-bound: VA procedures are often coded only by text (keyword fallback, terminology §1).
    "procedures": f"Procedure?patient={_P}&_sort=-date&_count=100",
    "conditions": f"Condition?patient={_P}&_count=200",
    "vitals": f"Observation?patient={_P}&code={_VITALS}&_sort=-date&_count=200",
    "labs": f"Observation?patient={_P}&code={_LABS}&_sort=-date&_count=200",
    # Symptoms and exams recorded as Observations (dyspnea, chest pain, neurological examination).
    "examObservations": f"Observation?patient={_P}&category=exam&_sort=-date&_count=100",
    "medications": f"MedicationRequest?patient={_P}&_sort=-authoredon&_count=100",
    "medicationStatements": f"MedicationStatement?patient={_P}&_count=100",
    "serviceRequests": f"ServiceRequest?patient={_P}&_sort=-authored&_count=100",
    "allergies": f"AllergyIntolerance?patient={_P}&_count=100",
    "imaging": f"DiagnosticReport?patient={_P}&_sort=-date&_count=100",
}

_CHECK_PCE = "Pulmonary cement embolism watch (post.pce.suspected)"
_CHECK_NEURO = "New neurological deficit (post.neuro.deficit)"
_CHECK_INF = "Infection after the procedure (post.infection.suspected)"
_CHECK_HEM = "Hemorrhage after the procedure (post.hemorrhage.suspected)"
_CHECK_PLEURAL = "Pneumothorax/hemothorax (post.pleural.suspected)"
_CHECK_PAIN = "Increased pain (post.pain.increased)"
_CHECK_FRACTURE = "New adjacent-level fracture (post.fracture.adjacent)"
_CHECK_HYPER = "Cement hypersensitivity (post.hypersensitivity)"
_CHECK_BONE = "Osteoporosis therapy after the procedure (post.bone-health.untreated)"
_CHECK_SCOPE = "Whether a vertebral augmentation is on record (all post-procedure checks)"
_CHECK_DUP = "Duplicate-order check for suggested work-up"

CHECKS_BY_KEY: dict[str, tuple[str, ...]] = {
    "procedures": (_CHECK_SCOPE, _CHECK_BONE),
    "conditions": (
        _CHECK_PCE,
        _CHECK_NEURO,
        _CHECK_INF,
        _CHECK_HEM,
        _CHECK_PLEURAL,
        _CHECK_PAIN,
        _CHECK_FRACTURE,
        _CHECK_HYPER,
    ),
    "vitals": (_CHECK_PCE, _CHECK_INF, _CHECK_HEM, _CHECK_PLEURAL, _CHECK_PAIN),
    "labs": (_CHECK_INF, _CHECK_HEM, _CHECK_HYPER),
    "examObservations": (_CHECK_PCE, _CHECK_NEURO, _CHECK_PLEURAL),
    "medications": (_CHECK_BONE,),
    "medicationStatements": (_CHECK_BONE,),
    "serviceRequests": (_CHECK_DUP, _CHECK_BONE),
    "allergies": (_CHECK_HYPER,),
    "imaging": (_CHECK_BONE,),
}
# A failed source of these makes "no therapy found" unknown rather than absent: the rule stays silent.
BONE_SOURCES = frozenset({"medications", "medicationStatements"})


def handle(inp: HookInput, policy: Policy) -> list[CardSpec]:
    """All post-procedure cards for one call; `[]` when no VA is within the look-back."""
    unavailable = data_unavailable_card(inp, CHECKS_BY_KEY)
    if "procedures" in inp.unavailable:
        # Without the procedure list we cannot know whether a VA is in scope: say so, never an all-clear.
        return [unavailable] if unavailable else []
    timeline = VaTimeline.from_facts(inp.facts, inp.now)
    latest = timeline.latest
    if latest is None:
        return []
    start = va_time(latest)
    assert start is not None
    if inp.now - start > timedelta(days=policy.value("post_lookback_days")):
        return []
    ctx = _Ctx(inp, policy, timeline)
    cards: list[CardSpec] = []
    for rule in (
        _rule_pce,
        _rule_neuro,
        _rule_infection,
        _rule_hemorrhage,
        _rule_pleural,
        _rule_pain,
        _rule_fracture,
        _rule_hypersensitivity,
    ):
        card = rule(ctx)
        if card is not None:
            cards.append(card)
    if not (BONE_SOURCES & inp.unavailable):
        bone = _rule_bone_health(ctx)
        if bone is not None:
            cards.append(bone)
    if not cards:
        failed_checks = [chk for k in sorted(inp.unavailable) for chk in CHECKS_BY_KEY.get(k, ())]
        followup = _rule_followup(ctx, failed_checks)
        if followup is not None:
            cards.append(followup)
    if unavailable is not None:
        cards.append(unavailable)
    return cards


def _doc(
    rule_id: str,
    title: str,
    indicator: Indicator,
    checks: str,
    reads: tuple[str, ...],
    steps: tuple[str, ...],
    citation: str,
    policy_keys: tuple[str, ...],
) -> RuleDoc:
    return RuleDoc(
        rule_id=rule_id,
        title=title,
        indicator=indicator,
        checks=checks,
        reads=reads,
        steps=steps,
        citation=citation,
        policy_keys=policy_keys,
        hooks=HOOKS,
    )


_AFTER = (
    "Findings count only when dated after the VA's start and inside the window from the most recent VA "
    "before them."
)

RULE_DOCS: tuple[RuleDoc, ...] = (
    _doc(
        PCE,
        "Suspected pulmonary cement embolism",
        "critical",
        "Fires on SpO₂ below the policy minimum, respiratory rate above the maximum, heart rate above the "
        "maximum together with new dyspnea, or new dyspnea / pleuritic or chest pain / PE diagnosis. "
        + _AFTER,
        (
            "SpO₂ (LOINC 59408-5, 2708-6)",
            "Respiratory rate (9279-1)",
            "Heart rate (8867-4)",
            "Conditions/Observations: pulmonary embolism, dyspnea, pleuritic or chest pain",
        ),
        (
            "Oxygen, vitals, SpO₂, ECG",
            "Chest X-ray",
            "CTPA if symptomatic or hypoxic",
            "Risk-stratify: observe / anticoagulate / IR or cardiothoracic retrieval",
            "Record and counsel",
        ),
        CITE_PCE,
        ("spo2_min_percent", "resp_rate_max", "heart_rate_max", "windows_days.post.pce.suspected"),
    ),
    _doc(
        NEURO,
        "New neurological deficit after VA",
        "critical",
        f"Fires on a new motor deficit, radiculopathy, myelopathy, saddle anesthesia, bowel/bladder "
        f"dysfunction, cord compression or cauda equina syndrome with onset after the VA. {_AFTER}",
        ("Conditions: neurological deficits (terminology §5)",),
        (
            "Assume canal/foraminal cement leak; full neuro exam",
            "Consider short high-dose steroid bridge",
            "Urgent MRI/CT",
            "Spine surgery for decompression if compressive",
        ),
        CITE_NEURO,
        ("windows_days.post.neuro.deficit",),
    ),
    _doc(
        INFECTION,
        "Suspected infection after VA",
        "critical",
        f"Critical for fever at or above the policy threshold, a positive blood culture, or discitis / "
        f"osteomyelitis / epidural abscess / wound infection / sepsis; warning for WBC, CRP or ESR above "
        f"the policy limits alone. {_AFTER}",
        (
            "Temperature (8310-5, 8331-1)",
            "WBC (6690-2)",
            "CRP (1988-5)",
            "ESR (30341-2)",
            "Blood culture (600-7)",
            "Infection conditions (terminology §5)",
        ),
        (
            "CBC, CRP/ESR; blood cultures if febrile",
            "MRI with contrast",
            "Aspiration/biopsy before antibiotics when stable",
            "Surgical consult indications",
            "6–12 weeks of therapy",
        ),
        CITE_INFECTION,
        ("fever_celsius", "wbc_max", "crp_max_mg_l", "esr_max_mm_h", "windows_days.post.infection.suspected"),
    ),
    _doc(
        HEMORRHAGE,
        "Suspected hemorrhage after VA",
        "critical",
        f"Fires on a hemoglobin drop of at least the policy amount against the last value before the VA, "
        f"systolic BP below the policy minimum, or hemothorax / hematoma / bleeding. {_AFTER}",
        (
            "Hemoglobin (718-7), baseline = last value before the VA",
            "Systolic BP (8480-6, 85354-9)",
            "Conditions: hemothorax, hemorrhage/hematoma",
        ),
        (
            "Hemorrhage protocol",
            "Reverse anticoagulation",
            "POCUS",
            "CTA chest/abdomen/pelvis",
            "IR / vascular surgery",
        ),
        CITE_HEMORRHAGE,
        ("hemoglobin_drop_g_dl", "systolic_bp_min", "windows_days.post.hemorrhage.suspected"),
    ),
    _doc(
        PLEURAL,
        "Suspected pneumothorax or hemothorax",
        "critical",
        f"Fires on pneumothorax or hemothorax, or pleuritic/chest pain or dyspnea together with "
        f"desaturation, after a thoracic-level VA or one whose level is unknown (lumbar, sacral and "
        f"cervical levels never fire). {_AFTER}",
        ("Conditions: pneumothorax, hemothorax, pleuritic pain, dyspnea", "SpO₂", "Procedure level/bodySite"),
        (
            "Assess and resuscitate",
            "POCUS / chest X-ray",
            "Pneumothorax management per BTS",
            "Hemothorax: drain, CTA, embolisation/VATS",
        ),
        CITE_PLEURAL,
        ("spo2_min_percent", "windows_days.post.pleural.suspected"),
    ),
    _doc(
        PAIN,
        "Increased pain after VA",
        "warning",
        f"Fires when the latest post-VA pain score is at least the policy number of points above the lowest "
        f"post-VA score before it, or a back-pain condition starts after the VA. {_AFTER}",
        ("Pain score (72514-3, 38208-5)", "Conditions: back pain"),
        (
            "MRI with STIR / CT",
            "Lower-limb neuro exam",
            "Vitals for embolism",
            "Consider the common causes",
            "Repeat augmentation for a refractory new fracture",
        ),
        CITE_PAIN,
        ("pain_rise_points", "windows_days.post.pain.increased"),
    ),
    _doc(
        FRACTURE,
        "New vertebral fracture after VA",
        "warning",
        f"Fires on a vertebral fracture condition with onset after the VA; ICD-10-CM codes with a 7th "
        f"character D, G, K, P or S (follow-up of an old fracture) are ignored. {_AFTER}",
        ("Conditions: vertebral fracture (terminology §5)",),
        (
            "Confirm with MRI",
            "Review drivers",
            "Optimise osteoporosis therapy",
            "Consider repeat VA if refractory",
        ),
        CITE_FRACTURE,
        ("windows_days.post.fracture.adjacent",),
    ),
    _doc(
        HYPERSENSITIVITY,
        "Suspected cement hypersensitivity",
        "critical",
        f"Fires on anaphylaxis or a hypersensitivity reaction recorded on the procedure day (within the "
        f"window). {_AFTER}",
        (
            "Conditions: anaphylaxis, hypersensitivity reaction",
            "Tryptase (21582-2)",
            "Allergies: bone cement",
        ),
        (
            "Stop, call for help, airway/IV",
            "Anaphylaxis protocol",
            "Tryptase within 1–2 h; document products",
            "Patch/LTT referral; record the allergy",
        ),
        CITE_HYPERSENSITIVITY,
        ("windows_days.post.hypersensitivity",),
    ),
    _doc(
        BONE_HEALTH,
        "Osteoporosis untreated after VA",
        "warning",
        "Fires within the window after the most recent VA when no anti-resorptive or anabolic therapy is "
        "found: no active order/statement, no zoledronic acid or denosumab dose within its interval, and "
        "none drafted. Calcium/vitamin D alone do not count. Silent when the medication source failed.",
        (
            "MedicationRequest / MedicationStatement (terminology §8)",
            "DXA history (orders, reports, procedures)",
        ),
        (
            "Calcium/vitamin D",
            "Anti-resorptive or anabolic therapy per risk",
            "DXA if none in 2 years",
            "Falls clinic / physiotherapy",
        ),
        CITE_BONE,
        (
            "zoledronic_interval_months",
            "denosumab_interval_months",
            "dxa_interval_years",
            "windows_days.post.bone-health.untreated",
        ),
    ),
    _doc(
        FOLLOWUP,
        "Follow-up after VA",
        "info",
        "Fires within the window after the most recent VA when no other post-procedure card fires.",
        ("Procedure (VA) date",),
        FOLLOWUP_LINES,
        CITE_FOLLOWUP,
        ("windows_days.post.followup",),
    ),
)


USAGE_REQUIREMENTS = (
    "Needs read access to the patient's Procedure, Condition, Observation (vital signs, labs, exam), "
    "MedicationRequest, MedicationStatement, ServiceRequest, AllergyIntolerance and DiagnosticReport "
    "resources. Returns no cards when no vertebral augmentation is on record within the look-back."
)


def services(policy: Policy) -> list[ServiceDefinition]:
    """The post-procedure services (one per hook, catalog V2.1) bound to a loaded policy."""

    def handler(inp: HookInput) -> list[CardSpec]:
        return handle(inp, policy)

    return [
        ServiceDefinition(
            id=service_id,
            hook=hook,
            title="Vertebral augmentation: complication watch after the procedure",
            description=(
                "For patients with a vertebral augmentation (vertebroplasty/kyphoplasty) in the last "
                f"{_num(policy.value('post_lookback_days'))} days: flags possible cement embolism, new "
                "neurological deficit, infection, hemorrhage, pleural injury, increased pain, new fractures, "
                "cement hypersensitivity and untreated osteoporosis, with the work-up one click away."
            ),
            prefetch=PREFETCH,
            usage_requirements=USAGE_REQUIREMENTS,
            checks_by_key=CHECKS_BY_KEY,
            handler=handler,
            rules=RULE_DOCS,
        )
        for hook, service_id in SERVICE_IDS.items()
    ]
