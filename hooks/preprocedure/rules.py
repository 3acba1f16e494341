"""The pre-procedure rules (rule catalog v2, V2.5 as amended by V2.12), one small function per rule id.

Each rule reads a `RuleContext` (hook input, policy, scope, time anchor and renal estimate, computed once)
and returns a `Finding` or None: trigger + facts + words. Whether a finding stands alone as a card, folds into
another card or into the checklist, and how loud it is, is decided in `present.py`, not here. The work-up
items (is the INR current, scheduled, missing or unreadable?) are read once through `workup.py`.
Card text is our own paraphrase of the chapter; record text goes through `md_escape`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cds_service.contracts import (
    Finding,
    HookInput,
    Indicator,
    LinkSpec,
    OverrideReasonSpec,
    SuggestionSpec,
    md_escape,
)
from fhir_mappings.facts import AllergyFact, ConditionFact, Evidence, ImagingFact, Measurement, MedicationFact
from hooks.common import order_suggestions
from hooks.policy import Policy
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure.renal import Hold, Renal, fmt_days, hold_for, renal_function
from hooks.preprocedure.scope import (
    ANTITHROMBOTIC_CLASSES,
    Anchor,
    Scope,
    anchor_of,
    antithrombotics,
)

# ---- rule ids (catalog; never rename) ----
ANTITHROMBOTIC_ACTIVE = "pre.coag.antithrombotic-active"
LABS_OUT_OF_RANGE = "pre.coag.labs-out-of-range"
LABS_MISSING = "pre.coag.labs-missing"
COAGULOPATHY = "pre.coag.coagulopathy"
INFECTION_ACTIVE = "pre.infection.active"
INFECTION_LABS = "pre.infection.labs-abnormal"
INFECTION_HISTORY = "pre.infection.history"
SCREEN_MISSING = "pre.infection.screen-missing"
RISK_FACTORS = "pre.infection.risk-factors"
CONCORDANCE_MISSING = "pre.indication.concordance-missing"
CONCORDANCE_DISCORDANT = "pre.indication.concordance-discordant"
NEURO_RED_FLAGS = "pre.indication.neuro-red-flags"
POSTERIOR_WALL = "pre.indication.posterior-wall"
ALLERGY_CONTRAST = "pre.allergy.contrast"
ALLERGY_CEMENT = "pre.allergy.cement"
SEDATION = "pre.sedation.cardiopulmonary"
GLYCEMIC = "pre.optimization.glycemic"
CHECKLIST = "pre.checklist"
ORDER_WHILE_PLANNED = "pre.antithrombotic-order-while-va-planned"
PATIENT_DECEASED = "pre.patient-deceased"

# ---- citations (chapter = Aydoğdu & Durak 2025; ref 6 is a sedation guideline: never for coagulation) ----
CITE_COAG = (
    "Chapter §2.1 Checklist — Pre-procedure safety; MASTER CHECKLIST 'Coagulation plan'; "
    "SIR 2019 Part II (Patel IJ et al., J Vasc Interv Radiol 2019;30:1168–1184)"
)
CITE_INFECTION = (
    "Chapter §4.2 (infection: risk factors and work-up), refs [12,37–39]; MASTER CHECKLIST "
    "'Exclude active infection'"
)
CITE_INDICATION = (
    "Chapter §1 (patient selection; pearls — indications), ref [1]; MASTER CHECKLIST "
    "'Confirm fracture acuity and pain–imaging concordance'"
)
CITE_NEURO = (
    "Chapter §1 (pearls — posterior wall, canal stenosis, retropulsion), ref [1]; §3.2.1; MASTER CHECKLIST "
    "'Neurologic exam'"
)
CITE_CONTRAST = "Chapter §2.1 Checklist — Pre-procedure safety (contrast allergy screen)"
CITE_CEMENT = "Chapter §3.1 (allergy or hypersensitivity to bone cement), refs [16,17]"
CITE_SEDATION = (
    "Chapter §1 (pearls — cardiopulmonary disease) and §2.1 (anaesthesia strategies), refs [6–9,11,13]; "
    "MASTER CHECKLIST 'Medical optimization'"
)
CITE_GLYCEMIC = (
    "MASTER CHECKLIST 'Medical optimization'; Chapter §4.2 (diabetes as infection risk), refs [12,37–39]"
)
CITE_RISK = (
    "Chapter §4.2 (risk factors), refs [12,37–39]; §2.1 Checklist (antibiotic prophylaxis per "
    "institutional policy)"
)
CITE_CHECKLIST = "Chapter MASTER CHECKLIST 'Pre-procedure' and §2.1 Checklist — Pre-procedure safety"
CITE_DECEASED = "va-cds rule catalog V2.4 and V2.12 (deceased patient: identity check)"

# ---- concept ids (fhir_mappings value sets; the v2 sets are agreed with extraction, see README) ----
SPINE_INFECTION = frozenset(
    {"discitis", "vertebral-osteomyelitis", "epidural-abscess", "paravertebral-abscess", "spondylitis"}
)
SYSTEMIC_INFECTION = frozenset(
    {"sepsis-bacteremia", "sepsis", "bacteremia", "systemic-infection", "wound-infection"}
)
ACCESS_SITE_INFECTION = frozenset({"access-site-infection"})
SPINAL_DEFICIT = frozenset(
    {"cord-compression", "cauda-equina", "myelopathy", "new-motor-deficit", "spinal-deficit"}
)
NOT_SPINAL_DEFICIT = frozenset(
    {"hemiplegia-stroke", "hemiplegia", "stroke", "stroke-sequela"}
)  # never a spinal red flag
STENOSIS = frozenset({"canal-stenosis", "spinal-stenosis"})
POSTERIOR_WALL_CONCEPTS = frozenset({"posterior-wall", "retropulsion", "posterior-wall-compromise"})
LIVER_DISEASE = frozenset({"chronic-liver-disease", "cirrhosis", "liver-disease"})
BLEEDING_DISORDER = frozenset({"coagulopathy", "bleeding-disorder", "thrombocytopenia"}) | LIVER_DISEASE
CARDIOPULMONARY = frozenset({"copd", "osa", "heart-failure", "pulmonary-hypertension", "respiratory-failure"})
CEMENT_ALLERGY = frozenset({"bone-cement", "benzoyl-peroxide", "dmpt", "implant-reaction", "cement-reaction"})
VTE = frozenset({"venous-thromboembolism", "vte", "pulmonary-embolism", "deep-vein-thrombosis"})
MECHANICAL_VALVE = frozenset({"mechanical-heart-valve", "mechanical-valve"})
CORONARY_STENT = frozenset({"coronary-stent"})
VKA = frozenset({"warfarin", "acenocoumarol", "phenprocoumon"})
DOAC = frozenset({"apixaban", "rivaroxaban", "dabigatran", "edoxaban"})
SPINE_IMAGING_MODALITIES = ("mri", "ct", "bone-scan")
_SPINE_REGIONS = frozenset({"cervical", "thoracic", "lumbar", "sacral", "thoracolumbar", "lumbosacral"})
_NOT_POSITIVE = ("pending", "in progress", "no growth", "not detected", "negative")

COMMON_REASONS = (
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
)


def _reasons(*specific: tuple[str, str]) -> tuple[OverrideReasonSpec, ...]:
    return tuple(OverrideReasonSpec(code, display) for code, display in specific) + COMMON_REASONS


# ---- context ----


@dataclass(frozen=True, slots=True)
class RuleContext:
    inp: HookInput
    policy: Policy
    scope: Scope
    renal: Renal
    anchor: Anchor
    # Per-call memo (measurements by kind, the work-up items): computed once, read by several rules.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def measurements(self, kind: str) -> list[Measurement]:
        by_kind: dict[str, list[Measurement]] | None = self.memo.get("by_kind")
        if by_kind is None:
            by_kind = {}
            for m in self.inp.facts.measurements:
                if m.time is not None:
                    by_kind.setdefault(m.kind, []).append(m)
            self.memo["by_kind"] = by_kind
        return by_kind.get(kind, [])

    @property
    def now(self) -> datetime:
        return self.inp.now

    def failed(self, *prefetch_keys: str) -> bool:
        """True when any of these sources failed: data unknown, not missing."""
        return any(k in self.inp.unavailable for k in prefetch_keys)

    def days(self, key: str) -> timedelta:
        return timedelta(days=self.policy.value(key))

    def pv(self, *policy_keys: str) -> dict[str, Any]:
        return {k: self.policy.value(k) for k in policy_keys}

    def orders(
        self, concepts: Iterable[str], reason: str, *, stat: bool = False, repeat: bool = False
    ) -> tuple[SuggestionSpec, ...]:
        """Suggested orders not yet drafted or active; urgent work-up is stat; a test with a current readable
        result is not suggested again unless the rule asks for a repeat (catalog V2.7)."""
        wanted = [x for x in concepts if repeat or not has_current(self, x)]
        priority = "stat" if stat else None
        return order_suggestions(self.inp, wanted, reason=reason, recommended=wanted, priority=priority)


def make_context(inp: HookInput, policy: Policy, scope: Scope) -> RuleContext:
    encounter = next((e for e in inp.facts.encounters if e.id == inp.encounter_id), None)
    anchor = anchor_of(
        scope,
        inp.now,
        imminent_hours=policy.value("imminent_hours"),
        encounter_class=encounter.class_code if encounter else None,
    )
    return RuleContext(inp, policy, scope, renal_function(inp.facts, inp.now, policy), anchor)


# ---- text helpers ----


def clip(text: str, limit: int = 139) -> str:
    """One line, under the CDS Hooks 140-character summary limit."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def day(when: datetime | None, now: datetime | None = None) -> str:
    """ "3 Dec" (the year added when it differs from now's), "date unknown" when not set."""
    if when is None:
        return "date unknown"
    text = f"{when.day} {when:%b}"
    return text if now is not None and when.year == now.year else f"{text} {when.year}"


def detail(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def names(items: Sequence[ConditionFact | AllergyFact]) -> str:
    """Record names for Markdown (detail)."""
    return ", ".join(md_escape(i.display) for i in items)


def plain(items: Sequence[ConditionFact | AllergyFact]) -> str:
    """Record names for plain text (summary, and lines that other cards escape as a whole)."""
    return ", ".join(" ".join(i.display.split()) for i in items)


def value_text(m: Measurement, label: str, unit: str, now: datetime) -> str:
    prelim = " (preliminary)" if m.status == "preliminary" else ""
    unit_s = f" {unit}" if unit else ""
    return f"{label} {m.value:g}{unit_s} on {day(m.time, now)}{prelim}"


def va_when(c: RuleContext) -> str:
    """How an imminent VA is named in a summary: "VA tomorrow", "VA on 3 Dec", "Urgent VA order"."""
    a = c.anchor
    if a.why_imminent in ("VA today", "VA tomorrow"):
        return a.why_imminent
    if a.start is not None:
        return f"VA on {day(a.start, c.now)}"
    return "Urgent VA order" if a.why_imminent == "urgent order" else "Inpatient VA"


def before_va(c: RuleContext) -> str:
    return f"before the VA on {day(c.anchor.start, c.now)}" if c.anchor.start else "before the VA"


# ---- shared facts ----


def when_of(cond: ConditionFact) -> datetime | None:
    """Onset, else recordedDate (catalog V2.12)."""
    return cond.onset or cond.recorded


def active_conditions(c: RuleContext, concepts: Iterable[str]) -> list[ConditionFact]:
    return [x for x in c.inp.facts.conditions_with(concepts) if x.active]


def recent(c: RuleContext, cond: ConditionFact, window: timedelta) -> bool:
    """Dated within `window` before now (an *active* finding is measured back from now, V2.12)."""
    when = when_of(cond)
    return when is not None and c.now - window <= when <= c.now


def antithrombotic_meds(c: RuleContext) -> list[MedicationFact]:
    """Active systemic antithrombotics, the latest record of each agent (local dose forms never count)."""
    meds = antithrombotics(c.inp.facts.active_medications(ANTITHROMBOTIC_CLASSES))
    latest: dict[str, MedicationFact] = {}
    for m in sorted(meds, key=lambda m: m.authored.timestamp() if m.authored else float("-inf")):
        if not m.dose_form_local:
            latest[m.ingredient] = m
    return list(latest.values())


def stale(c: RuleContext, med: MedicationFact) -> bool:
    months = c.policy.value("stale_medication_months")
    return med.authored is not None and med.authored < c.now - timedelta(days=months * 30.44)


def vkas(c: RuleContext) -> list[MedicationFact]:
    """Active vitamin K antagonists that are not stale (only those explain a raised INR)."""
    return [m for m in antithrombotic_meds(c) if m.ingredient in VKA and not stale(c, m)]


def on_doac_only(c: RuleContext) -> bool:
    meds = antithrombotic_meds(c)
    return any(m.ingredient in DOAC for m in meds) and not any(m.ingredient in VKA for m in meds)


def hold_of(c: RuleContext, med: MedicationFact) -> Hold:
    """The policy hold; a prophylactic LMWH dose read from the dosage holds 12 h (V2.10)."""
    limits = {
        "enoxaparin": ("lmwh_prophylactic_enoxaparin_mg_day", ("mg",)),
        "dalteparin": ("lmwh_prophylactic_dalteparin_iu_day", ("[iU]", "[IU]", "IU")),
    }
    if med.ingredient in limits and med.daily_dose is not None:
        key, units = limits[med.ingredient]
        if med.dose_unit in units and med.daily_dose <= c.policy.value(key):
            hours = c.policy.value("lmwh_prophylactic_hold_hours")
            return Hold(med.ingredient, hours / 24.0, "prophylactic dose", "")
    return hold_for(c.policy, med.ingredient, c.renal)


def span(days: float) -> str:
    """ "5-day", "12-hour": a hold period as an adjective."""
    return f"{days * 24:g}-hour" if days < 1 else f"{days:g}-day"


def hold_phrase(c: RuleContext, name: str, hold: Hold) -> str:
    """The hold against the anchor; never a past date as an instruction (V2.12)."""
    if hold.days is None:
        return f"no hold period for {name} in the institution's table: agree one with pharmacy"
    start = c.anchor.start
    if start is None:
        return f"hold {name} {fmt_days(hold.days)} before the VA"
    last = start - timedelta(days=hold.days)
    at = day(last, c.now) + (f" {last:%H:%M}" if hold.days < 1 else "")
    if last >= c.now:
        return f"hold {name} {fmt_days(hold.days)}: last dose on or before {at}"
    return (
        f"the planned date allows less than the {span(hold.days)} {name} hold: confirm the last dose was "
        f"on or before {at}, or reschedule"
    )


def is_spine_study(study: ImagingFact) -> bool:
    region = (study.region or "").lower()
    return study.modality in SPINE_IMAGING_MODALITIES and (
        not region or "spine" in region or region in _SPINE_REGIONS
    )


def spine_studies(imaging: Iterable[ImagingFact], since: datetime | None = None) -> list[ImagingFact]:
    """Dated spine MRI/CT/bone-scan studies, newest first, optionally from `since` on."""
    found = [
        i for i in imaging if is_spine_study(i) and i.time is not None and (since is None or i.time >= since)
    ]
    found.sort(key=lambda i: i.time.timestamp() if i.time else 0.0, reverse=True)
    return found


def current_imaging(c: RuleContext) -> list[ImagingFact]:
    since = c.anchor.since(timedelta(weeks=c.policy.value("imaging_window_weeks")))
    return [i for i in spine_studies(c.inp.facts.imaging, since) if i.time is not None and i.time <= c.now]


def judged_imaging(c: RuleContext) -> ImagingFact | None:
    """The study the concordance judgement rests on: the latest current MRI, else the latest other."""
    found = current_imaging(c)
    mri = [i for i in found if i.modality == "mri"]
    chosen = mri or found
    return chosen[0] if chosen else None


def latest_result(c: RuleContext, kind: str, window: timedelta) -> Measurement | None:
    """The latest result of a kind inside [anchor − window, now], readable or not (the latest governs)."""
    since = c.anchor.since(window)
    found = [m for m in c.measurements(kind) if m.time is not None and since <= m.time <= c.now]
    return max(found, key=lambda m: m.time.timestamp() if m.time else 0.0) if found else None


def readable(m: Measurement | None) -> Measurement | None:
    return m if m is not None and m.unusable is None and m.value is not None else None


# Orderable concept → (measurement kinds that must all be current, policy window key). Imaging below.
_RESULT_OF: dict[str, tuple[tuple[str, ...], str]] = {
    "inr": (("inr",), "coag_lab_window_days"),
    "cbc": (("wbc", "platelets"), "coag_lab_window_days"),
    "crp": (("crp",), "infection_lab_window_days"),
    "esr": (("esr",), "infection_lab_window_days"),
}
_STUDY_OF = {"mri-spine-stir": "mri", "mri-spine-contrast": "mri", "ct-spine": "ct"}


def has_current(c: RuleContext, concept: str) -> bool:
    """True when the test this orderable stands for already has a current, readable result (V2.7)."""
    if concept in _RESULT_OF:
        kinds, window = _RESULT_OF[concept]
        return all(readable(latest_result(c, k, c.days(window))) is not None for k in kinds)
    if concept in _STUDY_OF:
        return any(i.modality == _STUDY_OF[concept] for i in current_imaging(c))
    return False


def risk_conditions(c: RuleContext) -> list[ConditionFact]:
    return active_conditions(c, {"diabetes", "immunosuppression"})


# ---- one builder for every finding: the catalog's citation and override reasons per rule ----

CITATION: dict[str, str] = {
    ANTITHROMBOTIC_ACTIVE: CITE_COAG,
    LABS_OUT_OF_RANGE: CITE_COAG,
    LABS_MISSING: CITE_COAG,
    COAGULOPATHY: CITE_COAG,
    ORDER_WHILE_PLANNED: CITE_COAG,
    INFECTION_ACTIVE: CITE_INFECTION,
    INFECTION_LABS: CITE_INFECTION,
    INFECTION_HISTORY: CITE_INFECTION,
    SCREEN_MISSING: CITE_INFECTION,
    RISK_FACTORS: CITE_RISK,
    CONCORDANCE_MISSING: CITE_INDICATION,
    CONCORDANCE_DISCORDANT: CITE_INDICATION,
    NEURO_RED_FLAGS: CITE_NEURO,
    POSTERIOR_WALL: CITE_NEURO,
    ALLERGY_CONTRAST: CITE_CONTRAST,
    ALLERGY_CEMENT: CITE_CEMENT,
    SEDATION: CITE_SEDATION,
    GLYCEMIC: CITE_GLYCEMIC,
    CHECKLIST: CITE_CHECKLIST,
    PATIENT_DECEASED: CITE_DECEASED,
}
_DOCUMENTED = ("benefit-outweighs-risk", "Benefit outweighs risk — documented")
OVERRIDE_REASONS: dict[str, tuple[tuple[str, str], ...]] = {
    ANTITHROMBOTIC_ACTIVE: (
        ("hold-arranged", "Hold already arranged with prescriber and proceduralist"),
        ("continue-documented", "Continue: thrombotic risk outweighs bleeding risk — documented"),
        ("not-taking", "Patient no longer takes this medication"),
    ),
    LABS_OUT_OF_RANGE: (("corrected", "Already corrected — repeat result pending"), _DOCUMENTED),
    COAGULOPATHY: (("plan-documented", "Haematology/hepatology plan documented"),),
    ORDER_WHILE_PLANNED: (
        ("proceduralist-aware", "Coordinated with the proceduralist"),
        ("va-rescheduled", "Procedure will be rescheduled"),
        ("urgent-indication", "Urgent antithrombotic need outweighs procedure timing — documented"),
    ),
    INFECTION_ACTIVE: (("infection-excluded", "Infection excluded or treated — documented"), _DOCUMENTED),
    INFECTION_LABS: (("infection-excluded", "Infection excluded — documented"),),
    INFECTION_HISTORY: (("recurrence-excluded", "Recurrence excluded — documented"),),
    CONCORDANCE_DISCORDANT: (("concordance-documented", "Concordance confirmed clinically — documented"),),
    NEURO_RED_FLAGS: (
        ("surgery-reviewed", "Reviewed by spine surgery — augmentation appropriate"),
        ("not-current", "Old finding — baseline neuro exam documented"),
    ),
    POSTERIOR_WALL: (("canal-assessed", "Canal assessed — no compromise, documented"),),
    ALLERGY_CONTRAST: (
        ("plan-documented", "Contrast plan/premedication documented"),
        ("reaction-not-allergic", "Reaction was not allergic (intolerance) — documented"),
    ),
    ALLERGY_CEMENT: (
        ("patch-test-negative", "Patch testing negative / allergy excluded — documented"),
        ("alternative-material", "Alternative material planned"),
    ),
    GLYCEMIC: (("urgent-indication", "Urgent indication — peri-operative glucose plan"),),
}


def finding(
    c: RuleContext,
    rule_id: str,
    indicator: Indicator,
    summary: str,
    *lines: str,
    evidence: Iterable[Evidence] = (),
    orders: Iterable[str] = (),
    why: str = "",
    policy: Iterable[str] = (),
    policy_used: Mapping[str, Any] | None = None,
    line: str = "",
    links: tuple[LinkSpec, ...] = (),
    stat: bool | None = None,
    repeat: bool = False,
) -> Finding:
    """A finding in the catalog's terms: its citation and override reasons come with the rule id, so a rule
    only says what triggered it, on which facts, in which words. `orders` are suggested (stat when the
    finding is critical or `stat` says so, never when already ordered); `why` is the order's reason."""
    wanted = list(orders)
    reasons = OVERRIDE_REASONS.get(rule_id)
    return Finding(
        rule_id=rule_id,
        indicator=indicator,
        summary=clip(summary),
        detail=detail(*lines),
        citation=CITATION[rule_id],
        evidence=tuple(evidence),
        policy_used={**c.pv(*policy), **(policy_used or {})},
        suggestions=c.orders(
            wanted, why, stat=indicator == "critical" if stat is None else stat, repeat=repeat
        )
        if wanted
        else (),
        override_reasons=_reasons(*reasons) if reasons is not None else None,
        links=links,
        line=clip(line) if line else "",
    )


def note(
    c: RuleContext, rule_id: str, record: Sequence[str], words: str, evidence: Iterable[Evidence]
) -> Finding:
    """An info finding that reads as one line of another card: record names in `words`' {} (escaped in the
    Markdown line, plain in the summary), then our own words."""
    flat = ", ".join(" ".join(x.split()) for x in record)
    safe = ", ".join(md_escape(x) for x in record)
    return finding(
        c,
        rule_id,
        "info",
        words.format(flat),
        words.format(safe) + ".",
        evidence=evidence,
        line=words.format(safe),
    )


# ---- rules ----


def hold_summary(c: RuleContext, drugs: str, hold: Hold) -> str:
    if hold.days is None or c.anchor.start is None:
        return f"On {drugs}: {hold_phrase(c, hold.ingredient, hold)}"
    last = c.anchor.start - timedelta(days=hold.days)
    if last >= c.now:
        return (
            f"On {drugs}: hold {fmt_days(hold.days)} before the VA, last dose on or before {day(last, c.now)}"
        )
    short = span(hold.days)
    return f"On {drugs}: the VA date leaves less than the {short} hold — confirm the last dose or reschedule"


def antithrombotic_active(c: RuleContext) -> Finding | None:
    meds = [m for m in antithrombotic_meds(c) if hold_of(c, m).days != 0]  # hold 0: a checklist note
    if not meds:
        return None
    holds = {m.ingredient: hold_of(c, m) for m in meds}
    lines = [
        f"- **{md_escape(m.display)}** ({m.drug_class}): {hold_phrase(c, m.ingredient, holds[m.ingredient])}."
        + (f" Last ordered {day(m.authored)} — confirm it is still taken." if stale(c, m) else "")
        for m in meds
    ]
    if len(lines) > 4:  # V2.8: a short card; the evidence lists every record
        lines = [*lines[:3], f"- and {len(lines) - 3} more: {', '.join(m.ingredient for m in meds[3:])}."]
    longest = max(holds.values(), key=lambda h: h.days or 0.0)
    renal_split = any(
        (rule := c.policy.hold(i)) is not None and rule.days_reduced_renal is not None for i in holds
    )
    antiplatelets = [m for m in meds if m.drug_class == "antiplatelet"]
    anticoagulant = any(m.drug_class == "anticoagulant" for m in meds)
    risk = (
        len(antiplatelets) >= 2
        or (anticoagulant and any(recent(c, x, timedelta(days=90)) for x in active_conditions(c, VTE)))
        or bool(active_conditions(c, MECHANICAL_VALVE))
        or any(recent(c, x, timedelta(days=365)) for x in c.inp.facts.conditions_with(CORONARY_STENT))
    )
    inr = readable(latest_result(c, "inr", c.days("coag_lab_window_days")))
    summary = hold_summary(c, ", ".join(holds), longest)
    return finding(
        c,
        ANTITHROMBOTIC_ACTIVE,
        "warning",
        summary,
        "VA is a high bleeding-risk spine procedure: agree the hold, any bridging and the restart with the "
        "prescriber and the proceduralist.",
        *lines,
        "Thrombotic risk: agree the hold with the prescribing team." if risk else "",
        f"Renal function used: {md_escape(c.renal.basis)}." if renal_split else "",
        "INR does not measure DOAC effect." if inr is not None and on_doac_only(c) else "",
        evidence=[*(m.evidence for m in meds), *(c.renal.evidence if renal_split else ())],
        policy_used={
            f"antithrombotic_holds.{i}": {"days": h.days, "basis": h.reason} for i, h in holds.items()
        },
        line=summary,
    )


def labs_out_of_range(c: RuleContext) -> Finding | None:
    window = c.days("coag_lab_window_days")
    inr = readable(latest_result(c, "inr", window))
    plt = readable(latest_result(c, "platelets", window))
    liver = bool(active_conditions(c, LIVER_DISEASE))
    inr_max = c.policy.value("inr_max_liver" if liver else "inr_max")
    plt_min = c.policy.value("platelets_min_liver" if liver else "platelets_min")
    imminent = c.anchor.imminent
    problems: list[str] = []
    explained = ""
    judged: list[Measurement] = []
    if inr is not None and inr.value is not None and inr.value > inr_max and not on_doac_only(c):
        vka = vkas(c)
        shown = value_text(inr, "INR", "", c.now)
        judged.append(inr)
        if vka and inr.value <= c.policy.value("inr_max_explained_vka") and not imminent:
            explained = f"{shown}, expected on {vka[0].ingredient}; recheck within 2 days {before_va(c)}"
        elif vka:
            problems.append(
                f"{shown} on {vka[0].ingredient}: supratherapeutic, involve the anticoagulation team"
            )
        else:
            problems.append(f"{shown}, above {inr_max:g}: find the cause and correct it")
    if plt is not None and plt.value is not None and plt.value < plt_min:
        problems.append(f"{value_text(plt, 'platelets', '×10⁹/L', c.now)}, below {plt_min:g}")
        judged.append(plt)
    if not problems and not explained:
        return None
    indicator: Indicator = "critical" if imminent else ("warning" if problems else "info")
    if not problems:
        summary = explained
    elif imminent:
        summary = f"{va_when(c)}: {problems[0].split(':')[0].split(', above')[0]} — correct and recheck first"
    else:
        summary = f"Coagulation out of range for VA: {problems[0]}"
    return finding(
        c,
        LABS_OUT_OF_RANGE,
        indicator,
        summary,
        *(f"- {p}." for p in problems),
        f"- {explained}." if explained and problems else "",
        "Limits for chronic liver disease applied." if liver else "",
        "Correct per institutional policy and recheck before proceeding."
        if imminent
        else "The VA is not imminent: plan the correction and recheck before the procedure.",
        evidence=[m.evidence for m in judged],
        orders=[{"inr": "inr", "platelets": "cbc"}[m.kind] for m in judged] if imminent else (),
        why="Repeat before vertebral augmentation",
        repeat=True,
        policy=("coag_lab_window_days", "inr_max_explained_vka", "imminent_hours"),
        policy_used={"inr_max": inr_max, "platelets_min": plt_min},
        line=explained or summary,
    )


def coagulopathy(c: RuleContext) -> Finding | None:
    found = active_conditions(c, BLEEDING_DISORDER)
    if not found:
        return None
    team = "hepatology/haematology" if any(x.concepts & LIVER_DISEASE for x in found) else "haematology"
    return finding(
        c,
        COAGULOPATHY,
        "warning",
        f"Bleeding risk on record ({plain(found)}): agree a {team} plan before the VA",
        f"On record: {names(found)}. A bleeding disorder, thrombocytopenia or chronic liver disease raises "
        "the "
        f"risk of a spinal haematoma: agree the correction plan with {team} before the VA.",
        evidence=[x.evidence for x in found],
        line=f"Bleeding risk on record ({names(found)}): {team} plan before the VA",
    )


def positive_culture(m: Measurement) -> bool:
    text = m.evidence.summary.lower()
    return m.positive is True and not any(word in text for word in _NOT_POSITIVE)


def infection_active(c: RuleContext) -> Finding | None:
    facts = c.inp.facts
    fever_since = c.now - timedelta(hours=c.policy.value("fever_window_hours"))
    fevers = [
        m
        for m in facts.measurements_of("temperature", since=fever_since, until=c.now)
        if m.value is not None and m.value >= c.policy.value("fever_celsius")
    ]
    culture_since = c.now - c.days("blood_culture_window_days")
    cultures = [
        m
        for m in facts.measurements_of("blood_culture", since=culture_since, until=c.now)
        if positive_culture(m)
    ]
    spinal = active_conditions(c, SPINE_INFECTION | ACCESS_SITE_INFECTION)
    systemic = [
        x for x in active_conditions(c, SYSTEMIC_INFECTION) if recent(c, x, c.days("systemic_infection_days"))
    ]
    if not (fevers or cultures or spinal or systemic):
        return None
    parts: list[str] = []
    if fevers:
        top = max(fevers, key=lambda m: m.value or 0.0)
        parts.append(f"temperature {top.value:g} °C on {day(top.time, c.now)}")
    if cultures:
        parts.append(f"positive blood culture on {day(cultures[0].time, c.now)}")
    if spinal:
        parts.append(f"spinal infection: {plain(spinal)}")
    if systemic:
        parts.append(f"recent infection: {plain(systemic)}")
    critical = (
        bool(fevers or cultures or spinal) or c.anchor.imminent
    )  # V2.12: systemic alone → imminent only
    action = (
        "defer the VA until excluded or treated" if critical else "treat and confirm resolution before the VA"
    )
    return finding(
        c,
        INFECTION_ACTIVE,
        "critical" if critical else "warning",
        f"Possible active infection ({parts[0]}): {action}",
        *(f"- {md_escape(p)}" for p in parts),
        "Cement placed during an infection risks spondylodiscitis or epidural abscess. For a suspected "
        "spinal "
        "infection, image-guided aspiration before antibiotics when the patient is stable.",
        evidence=[
            *(m.evidence for m in fevers[:3]),
            *(m.evidence for m in cultures[:3]),
            *(x.evidence for x in spinal + systemic),
        ],
        orders=["cbc", "crp", "esr"] + (["blood-cultures"] if fevers or cultures else []),
        why="Suspected active infection before vertebral augmentation",
        policy=(
            "fever_celsius",
            "fever_window_hours",
            "blood_culture_window_days",
            "systemic_infection_days",
        ),
    )


def raised_infection_labs(c: RuleContext) -> list[Measurement]:
    """The latest current WBC/CRP above the post-procedure limits (policy wbc_max / crp_max_mg_l)."""
    window = c.days("infection_lab_window_days")
    out = []
    for kind, key in (("wbc", "wbc_max"), ("crp", "crp_max_mg_l")):
        m = readable(latest_result(c, kind, window))
        if m is not None and m.value is not None and m.value > c.policy.value(key):
            out.append(m)
    return out


def lab_text(m: Measurement, now: datetime) -> str:
    return value_text(m, m.kind.upper(), "mg/L" if m.kind == "crp" else "×10⁹/L", now)


def infection_labs_abnormal(c: RuleContext) -> Finding | None:
    raised = raised_infection_labs(c)
    if not raised:
        return None
    high = any(
        (m.kind == "crp" and (m.value or 0) >= c.policy.value("pre_crp_card_mg_l"))
        or (m.kind == "wbc" and (m.value or 0) > c.policy.value("pre_wbc_card"))
        for m in raised
    )
    risk = bool(
        risk_conditions(c)
        or c.inp.facts.conditions_with(SPINE_INFECTION)
        or c.inp.facts.active_medications({"immunosuppressant"})
    )
    if not (high or risk):
        return None  # a raised CRP is common after a recent fracture: a checklist row, not a finding
    shown = " and ".join(lab_text(m, c.now) for m in raised)
    return finding(
        c,
        INFECTION_LABS,
        "warning",
        f"{shown}: exclude infection before the VA",
        f"- {shown}" + ("; with an infection risk factor on record" if risk and not high else ""),
        "Inflammatory markers this high need an explanation before cement goes in: look for a source and "
        "check "
        "the MRI for discitis or an epidural collection.",
        evidence=[m.evidence for m in raised],
        orders=["esr", "mri-spine-contrast"],
        why="Raised WBC/CRP before vertebral augmentation",
        policy=("wbc_max", "crp_max_mg_l", "pre_crp_card_mg_l", "pre_wbc_card"),
        line=f"{shown}: exclude infection",
    )


def infection_history(c: RuleContext) -> Finding | None:
    past = [
        x for x in c.inp.facts.conditions_with(SPINE_INFECTION) if not x.active or x.abatement is not None
    ]
    if not past:
        return None
    return finding(
        c,
        INFECTION_HISTORY,
        "warning",
        f"Prior spinal infection ({plain(past)}): rule out recurrence before the VA",
        f"Past spinal infection: {names(past)}. A previous spondylitis raises the risk of infection after "
        "augmentation: check symptoms and inflammatory markers, and consider MRI with contrast.",
        evidence=[x.evidence for x in past],
        orders=["mri-spine-contrast"],
        why="Prior spinal infection: exclude recurrence",
        line=f"Prior spinal infection on record ({names(past)})",
    )


def risk_factors(c: RuleContext) -> Finding | None:
    conds = risk_conditions(c)
    drugs = c.inp.facts.active_medications({"immunosuppressant"})
    if not (conds or drugs):
        return None
    return note(
        c,
        RISK_FACTORS,
        [x.display for x in conds] + [m.display for m in drugs],
        "Infection risk factor ({}): antibiotic prophylaxis per policy",
        [*(x.evidence for x in conds), *(m.evidence for m in drugs)],
    )


def concordance_discordant(c: RuleContext) -> Finding | None:
    study = judged_imaging(c)
    if study is None or c.failed(keys.IMAGING):
        return None
    f = study.findings
    target = c.scope.target
    level = target.order.level if target else None
    reasons = [
        *(["no marrow oedema reported"] if "no-edema" in f and "edema" not in f else []),
        *(
            ["fracture described as chronic/healed"]
            if "chronic" in f and not ({"acute", "edema"} & f)
            else []
        ),
        *(
            [f"ordered level {level} not among those reported ({', '.join(sorted(study.levels))})"]
            if level and study.levels and level.upper() not in {lv.upper() for lv in study.levels}
            else []
        ),
    ]
    if not reasons:
        return None
    return finding(
        c,
        CONCORDANCE_DISCORDANT,
        "warning",
        f"Imaging may not support VA at this level ({reasons[0]}): reconsider or document",
        f"{study.modality.upper()} of {day(study.time, c.now)}: "
        + "; ".join(md_escape(x) for x in reasons)
        + ".",
        "Reconsider the indication, or document why pain and imaging agree (STIR oedema at the target level, "
        "focal tenderness).",
        evidence=[study.evidence, *((target.order.evidence,) if target else ())],
        policy=("imaging_window_weeks",),
    )


def new_deficit(c: RuleContext, cond: ConditionFact) -> bool:
    """A spinal-pattern deficit that is new: dated within neuro_new_days, or undated and not chronic."""
    if cond.chronic or cond.concepts & NOT_SPINAL_DEFICIT or cond.followup_encounter:
        return False
    return when_of(cond) is None or recent(c, cond, c.days("neuro_new_days"))


def deficits(c: RuleContext) -> list[ConditionFact]:
    return [x for x in active_conditions(c, SPINAL_DEFICIT) if not x.concepts & NOT_SPINAL_DEFICIT]


def baseline_deficits(c: RuleContext) -> list[ConditionFact]:
    """Old or chronic deficits and stenosis alone: the checklist's neuro row, never a finding (V2.11)."""
    old = [x for x in deficits(c) if not new_deficit(c, x)]
    return old + [x for x in active_conditions(c, STENOSIS) if x not in old]


def neuro_red_flags(c: RuleContext) -> Finding | None:
    new = [x for x in deficits(c) if new_deficit(c, x)]
    if not new:
        return None
    return finding(
        c,
        NEURO_RED_FLAGS,
        "critical",
        f"New neurological deficit ({plain(new)}): spine surgery opinion before any VA",
        "- " + ", ".join(f"{md_escape(x.display)} ({day(when_of(x), c.now)})" for x in new),
        "A new cord, cauda equina or motor deficit may need decompression rather than augmentation, and "
        "cement "
        "can make it worse. Examine, document and obtain a spine surgery opinion first.",
        evidence=[x.evidence for x in new],
        orders=["consult-spine-surgery"],
        why="New neurological deficit before vertebral augmentation",
        policy=("neuro_new_days",),
    )


def posterior_wall(c: RuleContext) -> Finding | None:
    conds = active_conditions(c, POSTERIOR_WALL_CONCEPTS)
    # Current imaging only: an old report's retropulsion belongs to an old fracture.
    studies = [i for i in current_imaging(c) if i.findings & POSTERIOR_WALL_CONCEPTS][:1]
    if not (conds or studies):
        return None
    shown = [md_escape(x.display) for x in conds] + [
        f"{i.modality.upper()} {day(i.time, c.now)}" for i in studies
    ]
    return finding(
        c,
        POSTERIOR_WALL,
        "warning",
        "Posterior wall involvement or retropulsion: assess canal compromise before the VA",
        f"On record: {', '.join(shown)}.",
        "Cement can leak into the canal through a broken posterior wall: measure canal compromise on CT and "
        "ask "
        "for a surgical opinion if the canal is compromised.",
        evidence=[*(x.evidence for x in conds), *(i.evidence for i in studies)],
        orders=["ct-spine", "consult-spine-surgery"],
        why="Posterior wall involvement before vertebral augmentation",
        line="Posterior wall involvement or retropulsion on record: assess canal compromise on CT",
    )


def allergy_contrast(c: RuleContext) -> Finding | None:
    found = [
        a for a in c.inp.facts.allergies if a.active and a.concepts & {"contrast-iodinated", "contrast-class"}
    ]
    if not found:
        return None
    true_allergy = [a for a in found if "contrast-iodinated" in a.concepts]
    if not true_allergy:  # iodine / shellfish / seafood only (V2.11): not a contrast allergy
        words = "{} allergy recorded — not a contrast allergy; ask the patient"
        return note(c, ALLERGY_CONTRAST, [a.display for a in found], words, [a.evidence for a in found])
    return finding(
        c,
        ALLERGY_CONTRAST,
        "warning",
        f"Contrast allergy ({plain(true_allergy)}): plan alternative contrast and premedication",
        f"On record: {names(true_allergy)}. Clarify the reaction; use a non-ionic or alternative agent "
        "(or none) "
        "and premedicate per institutional policy.",
        evidence=[a.evidence for a in true_allergy],
    )


def allergy_cement(c: RuleContext) -> Finding | None:
    facts = c.inp.facts
    items: list[ConditionFact | AllergyFact] = [
        *(a for a in facts.allergies if a.active and a.concepts & CEMENT_ALLERGY),
        *facts.conditions_with({"implant-reaction", "cement-reaction"}),
    ]
    if not items:
        return None
    return finding(
        c,
        ALLERGY_CEMENT,
        "critical",
        "Bone cement component allergy or prior implant reaction: allergy work-up before VA",
        f"On record: {names(items)}.",
        "Hypersensitivity to PMMA or its additives (benzoyl peroxide, N,N-dimethyl-p-toluidine) is rare but "
        "reported: patch testing with allergy input first; consider other materials.",
        evidence=[i.evidence for i in items],
        orders=["consult-allergy"],
        why="Suspected bone cement component allergy before vertebral augmentation",
    )


def sedation_cardiopulmonary(c: RuleContext) -> Finding | None:
    found = active_conditions(c, CARDIOPULMONARY)
    if not found:
        return None
    words = "{}: light sedation and local anaesthesia, check prone tolerance, record a room-air SpO₂"
    return note(c, SEDATION, [x.display for x in found], words, [x.evidence for x in found])


def glycemic(c: RuleContext) -> Finding | None:
    diabetes = active_conditions(c, {"diabetes"})
    if not diabetes:
        return None
    window = c.days("glycemic_window_days")
    high = [
        (m, value_text(m, label, unit, c.now))
        for kind, key, label, unit in (
            ("hba1c", "hba1c_max_percent", "HbA1c", "%"),
            ("glucose", "glucose_max_mg_dl", "glucose", "mg/dL"),
        )
        if (m := readable(latest_result(c, kind, window))) is not None
        and m.value is not None
        and m.value > c.policy.value(key)
    ]
    if not high:
        return None
    return finding(
        c,
        GLYCEMIC,
        "warning",
        f"Poor glycaemic control ({high[0][1]}): optimise before an elective VA",
        *(f"- {t}" for _, t in high),
        "Poorly controlled diabetes raises the infection risk after augmentation.",
        evidence=[*(m.evidence for m, _ in high), *(d.evidence for d in diabetes)],
        policy=("hba1c_max_percent", "glucose_max_mg_dl", "glycemic_window_days"),
    )


def antithrombotic_order_while_planned(c: RuleContext) -> Finding | None:
    vas = c.scope.all_va
    hits: list[tuple[MedicationFact, Hold]] = []
    evidence: list[Evidence] = []
    for med in c.scope.drafted_antithrombotics:
        hold = hold_of(c, med)
        clashing = [
            va.order.evidence
            for va in vas
            if va.start is None or hold.hours is None or va.start <= c.now + timedelta(hours=hold.hours)
        ]
        if clashing and hold.days != 0:
            hits.append((med, hold))
            evidence += [med.evidence, *(e for e in clashing if e not in evidence)]
    if not hits:
        return None
    med, hold = hits[0]
    first = min((v.start for v in vas if v.start is not None), default=None)
    when = f"on {day(first, c.now)}" if first else "(date not set)"
    hold_s = f"{span(hold.days)} hold" if hold.days is not None else "hold (period not in policy)"
    return finding(
        c,
        ORDER_WHILE_PLANNED,
        "warning",
        f"{med.ingredient.capitalize()} ordered while a VA is planned {when}, inside its {hold_s}",
        *(f"- **{md_escape(m.display)}**: {hold_phrase(c, m.ingredient, h)}." for m, h in hits),
        "Coordinate with the proceduralist: delay the start, reschedule the VA, or document why both are "
        "intended.",
        evidence=evidence,
        policy_used={
            f"antithrombotic_holds.{m.ingredient}": {"days": h.days, "basis": h.reason} for m, h in hits
        },
    )


def is_deceased(inp: HookInput) -> bool:
    patient = inp.facts.patient
    return patient is not None and (
        patient.deceased or (patient.deceased_on is not None and patient.deceased_on <= inp.now)
    )


def deceased(c: RuleContext) -> Finding | None:
    """The record says the patient died (V2.4/V2.12): one identity-check card on order hooks, nothing else."""
    patient = c.inp.facts.patient
    if patient is None or not is_deceased(c.inp):
        return None
    when = f" on {day(patient.deceased_on)}" if patient.deceased_on else ""
    return finding(
        c,
        PATIENT_DECEASED,
        "info",
        f"The record says this patient died{when}: check the patient's identity",
        "No safety checks were run for a patient recorded as deceased: check the right chart is open.",
        evidence=[patient.evidence],
    )


# The folded work-up findings (labs-missing, screen-missing, concordance-missing) live in `workup.py`, next to
# the work-up items they summarise.
Rule = Callable[[RuleContext], Finding | None]
