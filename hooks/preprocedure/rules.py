"""The pre-procedure rules (rule catalog, `va-preprocedure` table), one function per rule id.

Each rule reads a `RuleContext` (the hook input, policy, scope and renal estimate computed once) and
returns a `CardSpec` or None. Card text is our own paraphrase of the chapter; anything copied from the
record goes through `md_escape`. Windows and thresholds come only from `Policy`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.contracts import CardSpec, HookInput, OverrideReasonSpec, md_escape
from fhir_mappings.facts import (
    OLDEST,
    AllergyFact,
    ConditionFact,
    Evidence,
    ImagingFact,
    Measurement,
    MedicationFact,
)
from hooks.common import fmt_date, order_suggestions
from hooks.policy import Policy
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure.renal import Hold, Renal, fmt_days, hold_for, renal_function
from hooks.preprocedure.scope import ANTITHROMBOTIC_CLASSES, Scope, antithrombotics

# ---- rule ids (catalog; never rename) ----
ANTITHROMBOTIC_ACTIVE = "pre.coag.antithrombotic-active"
LABS_OUT_OF_RANGE = "pre.coag.labs-out-of-range"
LABS_MISSING = "pre.coag.labs-missing"
INFECTION_ACTIVE = "pre.infection.active"
INFECTION_HISTORY = "pre.infection.history"
SCREEN_MISSING = "pre.infection.screen-missing"
RISK_FACTORS = "pre.infection.risk-factors"
CONCORDANCE_MISSING = "pre.indication.concordance-missing"
CONCORDANCE_DISCORDANT = "pre.indication.concordance-discordant"
NEURO_RED_FLAGS = "pre.indication.neuro-red-flags"
ALLERGY_CONTRAST = "pre.allergy.contrast"
ALLERGY_CEMENT = "pre.allergy.cement"
SEDATION = "pre.sedation.cardiopulmonary"
GLYCEMIC = "pre.optimization.glycemic"
CHECKLIST = "pre.checklist"
ORDER_WHILE_PLANNED = "pre.antithrombotic-order-while-va-planned"

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

# ---- concept ids (fhir_mappings value sets) ----
ACTIVE_INFECTION = frozenset(
    {
        "discitis",
        "vertebral-osteomyelitis",
        "epidural-abscess",
        "paravertebral-abscess",
        "spondylitis",
        "sepsis-bacteremia",
        "sepsis",
        "bacteremia",
        "systemic-infection",
    }
)
SPINE_INFECTION_HISTORY = frozenset(
    {"discitis", "vertebral-osteomyelitis", "spondylitis", "epidural-abscess"}
)
NEURO_FLAGS = frozenset(
    {
        "cord-compression",
        "cauda-equina",
        "myelopathy",
        "new-motor-deficit",
        "retropulsion",
        "posterior-wall-compromise",
        "canal-stenosis",
    }
)
CARDIOPULMONARY = frozenset({"copd", "osa", "heart-failure", "pulmonary-hypertension", "respiratory-failure"})
CONTRAST_ALLERGY = frozenset({"contrast-iodinated", "contrast-class"})
CEMENT_ALLERGY = frozenset({"bone-cement", "benzoyl-peroxide", "dmpt", "implant-reaction", "cement-reaction"})
VKA = frozenset({"warfarin", "acenocoumarol", "phenprocoumon"})
SPINE_IMAGING_MODALITIES = ("mri", "ct", "bone-scan")
_SPINE_REGIONS = frozenset({"cervical", "thoracic", "lumbar", "sacral", "thoracolumbar", "lumbosacral"})

COMMON_REASONS = (
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
)


def _reasons(*specific: tuple[str, str]) -> tuple[OverrideReasonSpec, ...]:
    return tuple(OverrideReasonSpec(code, display) for code, display in specific) + COMMON_REASONS


@dataclass(frozen=True, slots=True)
class RuleContext:
    inp: HookInput
    policy: Policy
    scope: Scope
    renal: Renal

    @property
    def now(self) -> datetime:
        return self.inp.now

    def failed(self, *prefetch_keys: str) -> bool:
        """True when any of these sources failed: data unknown, not missing."""
        return any(k in self.inp.unavailable for k in prefetch_keys)

    def since_days(self, key: str) -> datetime:
        return self.now - timedelta(days=self.policy.value(key))

    def pv(self, *policy_keys: str) -> dict[str, Any]:
        return {k: self.policy.value(k) for k in policy_keys}

    def policy_lines(self, *policy_keys: str) -> str:
        out = []
        for k in policy_keys:
            v = self.policy.thresholds[k]
            out.append(f"- `{k}` = {v.value:g} {v.unit} — {v.source}")
        return "\n".join(out)


def make_context(inp: HookInput, policy: Policy, scope: Scope) -> RuleContext:
    return RuleContext(inp, policy, scope, renal_function(inp.facts, inp.now, policy))


# ---- text helpers ----


def clip(text: str, limit: int = 139) -> str:
    """One line, under the CDS Hooks 140-character summary limit."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def fmt_dt(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else "date not set"


def evidence_lines(evidence: Iterable[Evidence]) -> str:
    return "\n".join(f"- {md_escape(e.summary)} ({md_escape(e.reference)})" for e in evidence)


def _section(title: str, body: str) -> str:
    return f"**{title}**\n\n{body}" if body else ""


def detail(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def _names(items: Sequence[ConditionFact | AllergyFact]) -> str:
    return ", ".join(md_escape(i.display) for i in items)


# ---- shared facts ----


def active_antithrombotics(c: RuleContext) -> list[MedicationFact]:
    return antithrombotics(c.inp.facts.active_medications(ANTITHROMBOTIC_CLASSES))


def on_vka(c: RuleContext) -> bool:
    return any(m.ingredient in VKA for m in active_antithrombotics(c))


def inr_window_days(c: RuleContext) -> float:
    # The short INR window applies on warfarin only; platelets always use the general window.
    key = "inr_window_on_warfarin_days" if on_vka(c) else "coag_lab_window_days"
    return c.policy.value(key)


def latest_inr(c: RuleContext) -> Measurement | None:
    return c.inp.facts.latest("inr", since=c.now - timedelta(days=inr_window_days(c)))


def latest_platelets(c: RuleContext) -> Measurement | None:
    return c.inp.facts.latest("platelets", since=c.since_days("coag_lab_window_days"))


def _valued(m: Measurement | None) -> Measurement | None:
    return m if m is not None and m.value is not None else None


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
    found.sort(key=lambda i: i.time or OLDEST, reverse=True)
    return found


def spine_imaging(c: RuleContext, *, in_window: bool) -> list[ImagingFact]:
    since = c.now - timedelta(weeks=c.policy.value("imaging_window_weeks"))
    return spine_studies(c.inp.facts.imaging, since if in_window else None)


def judged_imaging(c: RuleContext) -> ImagingFact | None:
    """The study the concordance judgement rests on: the latest MRI in the window, else the latest other."""
    recent = spine_imaging(c, in_window=True)
    mri = [i for i in recent if i.modality == "mri"]
    chosen = mri or recent
    return chosen[0] if chosen else None


def hold_text(hold: Hold) -> str:
    if hold.days is None:
        return f"no hold period in policy for {hold.ingredient} — agree one with the proceduralist/pharmacy"
    text = f"{fmt_days(hold.days)} ({hold.reason})"
    if hold.normal_days is not None:
        text += f"; {fmt_days(hold.normal_days)} would apply once creatinine clearance is confirmed normal"
    return text


def _hold_policy(hold: Hold) -> dict[str, Any]:
    return {"days": hold.days, "basis": hold.reason}


# ---- rules ----


def antithrombotic_active(c: RuleContext) -> CardSpec | None:
    meds = active_antithrombotics(c)
    if not meds:
        return None
    by_ingredient: dict[str, MedicationFact] = {}
    for m in sorted(meds, key=lambda m: m.authored or OLDEST):  # aware: never naive datetime.min (V2.9)
        by_ingredient[m.ingredient] = m  # the most recent record of each agent
    target = c.scope.target
    lines: list[str] = []
    policy_used: dict[str, Any] = {}
    longest = 0.0
    for ingredient, med in by_ingredient.items():
        hold = hold_for(c.policy, ingredient, c.renal)
        policy_used[f"antithrombotic_holds.{ingredient}"] = _hold_policy(hold)
        line = (
            f"- **{md_escape(med.display)}** — {med.drug_class} ({ingredient}), "
            f"{med.resource_type} {med.status}, last ordered/recorded {fmt_date(med.authored)}. "
            f"Hold before a high-bleeding-risk spine procedure: {hold_text(hold)}."
        )
        if hold.note:
            line += f" Policy note: {md_escape(hold.note)}."
        if hold.days is not None:
            longest = max(longest, hold.days)
            if target is not None and target.start is not None:
                last_dose = target.start - timedelta(days=hold.days)
                line += f" For the VA on {fmt_dt(target.start)}: last dose no later than {fmt_dt(last_dose)}"
                line += " — **that time has already passed**." if last_dose < c.now else "."
        lines.append(line)
    renal_split = any(
        (rule := c.policy.hold(i)) is not None and rule.days_reduced_renal is not None for i in by_ingredient
    )
    renal_line = (
        f"Renal function used for the hold periods: {md_escape(c.renal.basis)}." if renal_split else ""
    )
    inr_missing = _valued(latest_inr(c)) is None and not c.failed(keys.COAG_LABS)
    plt_missing = _valued(latest_platelets(c)) is None and not c.failed(keys.COAG_LABS)
    wanted = (["inr"] if inr_missing else []) + (["cbc"] if plt_missing else [])
    names = ", ".join(by_ingredient)
    summary = (
        f"Active antithrombotic ({names}): plan a hold of up to {fmt_days(longest)} before the VA"
        if longest
        else f"Active antithrombotic ({names}): review the peri-procedural plan before the VA"
    )
    return CardSpec(
        rule_id=ANTITHROMBOTIC_ACTIVE,
        indicator="warning",
        summary=clip(summary),
        detail=detail(
            "Vertebroplasty and kyphoplasty are **high bleeding-risk** spine procedures (epidural or spinal "
            "haematoma). The record shows active antithrombotic therapy; agree the hold, any bridging "
            "and the "
            "restart with the prescriber and the proceduralist, and document it.",
            "\n".join(lines),
            renal_line,
            _section(
                "Policy values used",
                f"- `antithrombotic_holds` — {md_escape(c.policy.holds_source)}"
                + ("\n" + c.policy_lines("renal_window_days", "weight_window_days") if renal_split else ""),
            ),
            "No INR and/or platelet count within the policy window — ordering them is suggested below."
            if wanted
            else "",
        ),
        citation=CITE_COAG,
        evidence=tuple(m.evidence for m in by_ingredient.values())
        + (c.renal.evidence if renal_split else ()),
        policy_used=policy_used | (c.pv("renal_window_days") if renal_split else {}),
        suggestions=order_suggestions(
            c.inp, wanted, reason="Coagulation status before vertebral augmentation on antithrombotic therapy"
        ),
        override_reasons=_reasons(
            ("hold-arranged", "Hold already arranged with prescriber and proceduralist"),
            ("continue-documented", "Continue: thrombotic risk outweighs bleeding risk — documented"),
            ("not-taking", "Patient no longer takes this medication"),
        ),
    )


def labs_out_of_range(c: RuleContext) -> CardSpec | None:
    inr = _valued(latest_inr(c))
    plt = _valued(latest_platelets(c))
    inr_max = c.policy.value("inr_max")
    plt_min = c.policy.value("platelets_min")
    problems: list[str] = []
    evidence: list[Evidence] = []
    wanted: list[str] = []
    if inr is not None and inr.value is not None and inr.value > inr_max:
        problems.append(f"INR {inr.value:g} on {fmt_date(inr.time)} (policy maximum {inr_max:g})")
        evidence.append(inr.evidence)
        wanted.append("inr")
    if plt is not None and plt.value is not None and plt.value < plt_min:
        problems.append(
            f"platelets {plt.value:g} ×10⁹/L on {fmt_date(plt.time)} (policy minimum {plt_min:g} ×10⁹/L)"
        )
        evidence.append(plt.evidence)
        wanted.append("cbc")
    if not problems:
        return None
    return CardSpec(
        rule_id=LABS_OUT_OF_RANGE,
        indicator="critical",
        summary=clip("Coagulation out of range for VA: " + "; ".join(p.split(" (")[0] for p in problems)),
        detail=detail(
            "The latest result inside the policy window is outside the limit for a high bleeding-risk spine "
            "procedure. Do not proceed until it is corrected per institutional policy (e.g. reversal or "
            "platelet transfusion) and re-checked.",
            _section("Findings", "\n".join(f"- {p}" for p in problems)),
            _section("Evidence", evidence_lines(evidence)),
            _section(
                "Policy values used",
                c.policy_lines(
                    "inr_max", "platelets_min", "coag_lab_window_days", "inr_window_on_warfarin_days"
                ),
            ),
        ),
        citation=CITE_COAG,
        evidence=tuple(evidence),
        policy_used=c.pv("inr_max", "platelets_min", "coag_lab_window_days")
        | {"inr_window_days": inr_window_days(c)},
        suggestions=order_suggestions(
            c.inp, wanted, reason="Repeat after correction, before vertebral augmentation"
        ),
        override_reasons=_reasons(
            ("corrected", "Already corrected — repeat result pending"),
            ("benefit-outweighs-risk", "Benefit outweighs risk — documented"),
        ),
    )


def labs_missing(c: RuleContext) -> CardSpec | None:
    if c.failed(keys.COAG_LABS):
        return None  # unknown, not missing: sys.data-unavailable reports it
    inr_days = inr_window_days(c)
    plt_days = c.policy.value("coag_lab_window_days")
    missing: list[str] = []
    older: list[Evidence] = []
    wanted: list[str] = []
    if _valued(latest_inr(c)) is None:
        why = f"no INR within {inr_days:g} days" + (" (patient on warfarin)" if on_vka(c) else "")
        missing.append(why)
        wanted.append("inr")
        if (old := c.inp.facts.latest("inr")) is not None:
            older.append(old.evidence)
    if _valued(latest_platelets(c)) is None:
        missing.append(f"no platelet count within {plt_days:g} days")
        wanted.append("cbc")
        if (old := c.inp.facts.latest("platelets")) is not None:
            older.append(old.evidence)
    if not missing:
        return None
    return CardSpec(
        rule_id=LABS_MISSING,
        indicator="warning",
        summary=clip("Pre-VA coagulation labs missing: " + "; ".join(missing)),
        detail=detail(
            "A high bleeding-risk spine procedure needs a current INR and platelet count. Missing "
            "results are "
            "a finding, not an all-clear: " + "; ".join(missing) + ".",
            _section(
                "Older results (outside the window — shown for context, not used)",
                evidence_lines(older),
            ),
            _section(
                "Policy values used",
                c.policy_lines("coag_lab_window_days", "inr_window_on_warfarin_days"),
            ),
        ),
        citation=CITE_COAG,
        evidence=tuple(older),
        policy_used=c.pv("coag_lab_window_days", "inr_window_on_warfarin_days")
        | {"inr_window_days": inr_days},
        suggestions=order_suggestions(
            c.inp,
            wanted,
            reason="Pre-procedure coagulation screen for vertebral augmentation",
            recommended=wanted,
        ),
        override_reasons=_reasons(
            ("labs-pending", "Drawn today — results pending"),
            ("outside-results", "Recent results available outside this EHR"),
        ),
    )


def infection_active(c: RuleContext) -> CardSpec | None:
    facts = c.inp.facts
    fever_c = c.policy.value("fever_celsius")
    fever_since = c.now - timedelta(hours=c.policy.value("fever_window_hours"))
    fevers = [
        m
        for m in facts.measurements_of("temperature", since=fever_since)
        if m.value is not None and m.value >= fever_c
    ]
    infections = [x for x in facts.conditions_with(ACTIVE_INFECTION) if x.active]
    cultures = [
        m
        for m in facts.measurements_of("blood_culture", since=c.since_days("blood_culture_window_days"))
        if m.positive
    ]
    if not (fevers or infections or cultures):
        return None
    findings: list[str] = []
    if fevers:
        top = max(fevers, key=lambda m: m.value or 0.0)
        findings.append(f"temperature {top.value:g} °C on {fmt_dt(top.time)}")
    if infections:
        findings.append(f"active infection on the problem list: {_names(infections)}")
    if cultures:
        findings.append(f"positive blood culture on {fmt_date(cultures[0].time)}")
    parts = (
        (["fever"] if fevers else [])
        + (["infection diagnosis"] if infections else [])
        + (["positive blood culture"] if cultures else [])
    )
    evidence = (
        tuple(m.evidence for m in fevers[:3])
        + tuple(x.evidence for x in infections)
        + tuple(m.evidence for m in cultures[:3])
    )
    return CardSpec(
        rule_id=INFECTION_ACTIVE,
        indicator="critical",
        summary=clip(f"Possible active infection ({', '.join(parts)}): defer VA until excluded or treated"),
        detail=detail(
            "Cement placed into an infected vertebra or during bacteraemia risks spondylodiscitis or "
            "epidural "
            "abscess. Defer the elective augmentation until infection is excluded or treated.",
            _section("Findings", "\n".join(f"- {f}" for f in findings)),
            _section("Evidence", evidence_lines(evidence)),
            _section(
                "Policy values used",
                c.policy_lines("fever_celsius", "fever_window_hours", "blood_culture_window_days"),
            ),
            "Work-up suggested below: CBC, CRP, ESR and blood cultures (those not already ordered).",
        ),
        citation=CITE_INFECTION,
        evidence=evidence,
        policy_used=c.pv("fever_celsius", "fever_window_hours", "blood_culture_window_days"),
        suggestions=order_suggestions(
            c.inp,
            ["cbc", "crp", "esr", "blood-cultures"],
            reason="Suspected active infection before vertebral augmentation",
        ),
        override_reasons=_reasons(
            ("infection-excluded", "Infection excluded or treated — documented"),
            ("benefit-outweighs-risk", "Benefit outweighs risk — documented"),
        ),
    )


def infection_history(c: RuleContext) -> CardSpec | None:
    past = [x for x in c.inp.facts.conditions_with(SPINE_INFECTION_HISTORY) if not x.active]
    if not past:
        return None
    return CardSpec(
        rule_id=INFECTION_HISTORY,
        indicator="warning",
        summary=clip("Prior spinal infection on record: rule out recurrence before VA"),
        detail=detail(
            f"Past spinal infection: {_names(past)}. A previous spondylitis is a recognised risk factor for "
            "infection after augmentation; check for recurrence (symptoms, inflammatory markers) and "
            "consider "
            "contrast-enhanced MRI of the spine before proceeding.",
            _section("Evidence", evidence_lines(x.evidence for x in past)),
        ),
        citation=CITE_INFECTION,
        evidence=tuple(x.evidence for x in past),
        suggestions=order_suggestions(
            c.inp,
            ["mri-spine-contrast"],
            reason="Prior spinal infection: exclude recurrence before vertebral augmentation",
        ),
        override_reasons=_reasons(("recurrence-excluded", "Recurrence excluded — documented")),
    )


def screen_missing(c: RuleContext) -> CardSpec | None:
    facts = c.inp.facts
    missing: list[str] = []
    wanted: list[str] = []
    hours = c.policy.value("fever_window_hours")
    if not c.failed(keys.TEMPERATURE):
        if facts.latest("temperature", since=c.now - timedelta(hours=hours)) is None:
            missing.append(f"no temperature recorded within {hours:g} h")
    if not c.failed(keys.INFECTION_LABS):
        since = c.since_days("infection_lab_window_days")
        if facts.latest("wbc", since=since) is None and facts.latest("crp", since=since) is None:
            days = c.policy.value("infection_lab_window_days")
            missing.append(f"neither a WBC nor a CRP within {days:g} days")
            wanted = ["cbc", "crp"]
    if not missing:
        return None
    return CardSpec(
        rule_id=SCREEN_MISSING,
        indicator="warning",
        summary=clip("Infection screen incomplete before VA: " + "; ".join(missing)),
        detail=detail(
            "Active infection must be excluded before augmentation. Missing data is a finding: "
            + "; ".join(missing)
            + ". Record a current temperature and obtain a WBC (CBC) and CRP.",
            _section(
                "Policy values used",
                c.policy_lines("fever_window_hours", "infection_lab_window_days"),
            ),
        ),
        citation=CITE_INFECTION,
        policy_used=c.pv("fever_window_hours", "infection_lab_window_days"),
        suggestions=order_suggestions(
            c.inp, wanted, reason="Infection screen before vertebral augmentation", recommended=wanted
        ),
        override_reasons=_reasons(
            ("labs-pending", "Drawn today — results pending"),
            ("outside-results", "Recent results available outside this EHR"),
        ),
    )


def risk_factors(c: RuleContext) -> CardSpec | None:
    facts = c.inp.facts
    conds = [x for x in facts.conditions_with({"diabetes", "immunosuppression"}) if x.active]
    drugs = facts.active_medications({"immunosuppressant"})
    if not (conds or drugs):
        return None
    found = [md_escape(x.display) for x in conds] + [md_escape(m.display) for m in drugs]
    has_diabetes = any("diabetes" in x.concepts for x in conds)
    labels = (["diabetes"] if has_diabetes else []) + (
        ["immunosuppression"] if drugs or any("immunosuppression" in x.concepts for x in conds) else []
    )
    return CardSpec(
        rule_id=RISK_FACTORS,
        indicator="info",
        summary=clip(f"Infection risk factor ({' and '.join(labels)}): prophylaxis per policy before VA"),
        detail=detail(
            f"Risk factors for infection after augmentation on record: {', '.join(found)}. Give antibiotic "
            "prophylaxis per institutional policy"
            + ("; optimise glycaemic control before an elective procedure." if has_diabetes else "."),
            _section("Evidence", evidence_lines([x.evidence for x in conds] + [m.evidence for m in drugs])),
        ),
        citation=CITE_RISK,
        evidence=tuple(x.evidence for x in conds) + tuple(m.evidence for m in drugs),
    )


def concordance_missing(c: RuleContext) -> CardSpec | None:
    if c.failed(keys.IMAGING):
        return None
    if spine_imaging(c, in_window=True):
        return None
    weeks = c.policy.value("imaging_window_weeks")
    older = spine_imaging(c, in_window=False)[:1]
    return CardSpec(
        rule_id=CONCORDANCE_MISSING,
        indicator="warning",
        summary=clip(f"No spine MRI (or CT) within {weeks:g} weeks: confirm fracture acuity before VA"),
        detail=detail(
            "Augmentation is indicated for an acute or subacute painful fracture whose level matches "
            "the pain. "
            "Without recent imaging, acuity and concordance are unconfirmed: obtain MRI of the spine "
            "with STIR "
            "(or T2 fat-saturated) sequences looking for marrow oedema at the target level, and "
            "document focal "
            "percussion tenderness at that level. CT or bone scan if MRI is contraindicated.",
            _section(
                "Most recent spine imaging (outside the window)", evidence_lines(i.evidence for i in older)
            ),
            _section("Policy values used", c.policy_lines("imaging_window_weeks")),
        ),
        citation=CITE_INDICATION,
        evidence=tuple(i.evidence for i in older),
        policy_used=c.pv("imaging_window_weeks"),
        suggestions=order_suggestions(
            c.inp,
            ["mri-spine-stir"],
            reason="Fracture acuity and pain–imaging concordance before vertebral augmentation",
            recommended=["mri-spine-stir"],
        ),
        override_reasons=_reasons(
            ("outside-imaging", "Recent imaging available outside this EHR — reviewed"),
            ("mri-contraindicated", "MRI contraindicated — alternative imaging reviewed"),
        ),
    )


def concordance_discordant(c: RuleContext) -> CardSpec | None:
    if c.failed(keys.IMAGING):
        return None
    study = judged_imaging(c)
    if study is None:
        return None
    reasons: list[str] = []
    f = study.findings
    if "no-edema" in f and "edema" not in f:
        reasons.append("no marrow oedema reported")
    if "chronic" in f and not ({"acute", "edema"} & f):
        reasons.append("fracture described as chronic/healed")
    target = c.scope.target
    level = target.order.level if target else None
    if level and study.levels and level.upper() not in {lv.upper() for lv in study.levels}:
        reasons.append(
            f"ordered level {level} is not among the levels reported ({', '.join(sorted(study.levels))})"
        )
    if not reasons:
        return None
    return CardSpec(
        rule_id=CONCORDANCE_DISCORDANT,
        indicator="warning",
        summary=clip("Imaging may not support VA at this level: " + "; ".join(reasons)),
        detail=detail(
            f"The {study.modality.upper()} of {fmt_date(study.time)} ({md_escape(study.display)}) does "
            "not clearly "
            "show an acute fracture at the level being treated: "
            + "; ".join(md_escape(r) for r in reasons)
            + ". Reconsider the indication, or document why pain and imaging are concordant "
            "(e.g. oedema on STIR at the target level, focal tenderness).",
            _section(
                "Evidence", evidence_lines([study.evidence] + ([target.order.evidence] if target else []))
            ),
        ),
        citation=CITE_INDICATION,
        evidence=(study.evidence,) + ((target.order.evidence,) if target else ()),
        policy_used=c.pv("imaging_window_weeks"),
        override_reasons=_reasons(
            ("concordance-documented", "Concordance confirmed clinically — documented")
        ),
    )


def neuro_red_flags(c: RuleContext) -> CardSpec | None:
    flags = [x for x in c.inp.facts.conditions_with(NEURO_FLAGS) if x.active]
    if not flags:
        return None
    return CardSpec(
        rule_id=NEURO_RED_FLAGS,
        indicator="critical",
        summary=clip("Neurological red flag on record: decompression may be needed instead of augmentation"),
        detail=detail(
            f"On record: {_names(flags)}. Cord or cauda equina compromise, myelopathy, a new motor "
            "deficit or "
            "retropulsion / posterior wall compromise can be made worse by cement and may need surgical "
            "decompression rather than augmentation. Examine and document the neurological status and obtain "
            "a spine surgery opinion before proceeding.",
            _section("Evidence", evidence_lines(x.evidence for x in flags)),
        ),
        citation=CITE_NEURO,
        evidence=tuple(x.evidence for x in flags),
        suggestions=order_suggestions(
            c.inp,
            ["consult-spine-surgery"],
            reason="Neurological red flag before vertebral augmentation: decompression?",
            recommended=["consult-spine-surgery"],
        ),
        override_reasons=_reasons(
            ("surgery-reviewed", "Reviewed by spine surgery — augmentation appropriate"),
            ("not-current", "Old finding, resolved — neuro exam documented"),
        ),
    )


def allergy_contrast(c: RuleContext) -> CardSpec | None:
    found = [a for a in c.inp.facts.allergies if a.active and a.concepts & CONTRAST_ALLERGY]
    if not found:
        return None
    specific = any("contrast-iodinated" in a.concepts for a in found)
    summary = (
        "Iodinated contrast allergy: plan non-ionic/alternative contrast and premedication per policy"
        if specific
        else "Possible contrast allergy (class-level entry): check with the patient before VA"
    )
    return CardSpec(
        rule_id=ALLERGY_CONTRAST,
        indicator="warning",
        summary=clip(summary),
        detail=detail(
            f"Allergy list: {_names(found)}. Contrast may be used for vertebrography or venography. "
            "Clarify the "
            "reaction, have a non-ionic or alternative plan ready (or avoid contrast), and premedicate per "
            "institutional policy.",
            _section("Evidence", evidence_lines(a.evidence for a in found)),
        ),
        citation=CITE_CONTRAST,
        evidence=tuple(a.evidence for a in found),
        override_reasons=_reasons(
            ("plan-documented", "Contrast plan/premedication documented"),
            ("reaction-not-allergic", "Reaction was not allergic (intolerance) — documented"),
        ),
    )


def allergy_cement(c: RuleContext) -> CardSpec | None:
    facts = c.inp.facts
    allergies = [a for a in facts.allergies if a.active and a.concepts & CEMENT_ALLERGY]
    reactions = facts.conditions_with({"implant-reaction", "cement-reaction"})
    if not (allergies or reactions):
        return None
    items: list[ConditionFact | AllergyFact] = [*allergies, *reactions]
    return CardSpec(
        rule_id=ALLERGY_CEMENT,
        indicator="critical",
        summary=clip(
            "Bone cement (PMMA/initiator) allergy or prior implant reaction: allergy work-up before VA"
        ),
        detail=detail(
            f"On record: {_names(items)}. Hypersensitivity to PMMA or its additives (benzoyl peroxide, "
            "N,N-dimethyl-p-toluidine) is rare but reported. Obtain dermatology/allergy-immunology "
            "input with "
            "patch testing before augmentation, and consider alternative materials or a non-cement strategy.",
            _section("Evidence", evidence_lines(i.evidence for i in items)),
        ),
        citation=CITE_CEMENT,
        evidence=tuple(i.evidence for i in items),
        suggestions=order_suggestions(
            c.inp,
            ["consult-allergy", "consult-dermatology", "consult-immunology"],
            reason="Suspected bone cement (PMMA) component allergy before vertebral augmentation",
            recommended=["consult-allergy"],
        ),
        override_reasons=_reasons(
            ("patch-test-negative", "Patch testing negative / allergy excluded — documented"),
            ("alternative-material", "Alternative material planned"),
        ),
    )


def sedation_cardiopulmonary(c: RuleContext) -> CardSpec | None:
    found = [x for x in c.inp.facts.conditions_with(CARDIOPULMONARY) if x.active]
    if not found:
        return None
    return CardSpec(
        rule_id=SEDATION,
        indicator="warning",
        summary=clip(
            "Cardiopulmonary disease: plan local anaesthesia with light sedation and check prone tolerance"
        ),
        detail=detail(
            f"On record: {_names(found)}. Lying prone under sedation strains airway and breathing. "
            "Prefer local "
            "anaesthesia with light sedation, consider an erector spinae plane block to spare opioids, "
            "assess "
            "whether the patient tolerates the prone position, and keep general anaesthesia for "
            "selected cases.",
            _section("Evidence", evidence_lines(x.evidence for x in found)),
        ),
        citation=CITE_SEDATION,
        evidence=tuple(x.evidence for x in found),
        override_reasons=_reasons(("anaesthesia-assessed", "Anaesthesia assessment done — plan documented")),
    )


def glycemic(c: RuleContext) -> CardSpec | None:
    facts = c.inp.facts
    diabetes = [x for x in facts.conditions_with({"diabetes"}) if x.active]
    if not diabetes:
        return None
    since = c.since_days("glycemic_window_days")
    a1c = _valued(facts.latest("hba1c", since=since))
    glu = _valued(facts.latest("glucose", since=since))
    a1c_max = c.policy.value("hba1c_max_percent")
    glu_max = c.policy.value("glucose_max_mg_dl")
    high: list[Measurement] = []
    text: list[str] = []
    if a1c is not None and a1c.value is not None and a1c.value > a1c_max:
        high.append(a1c)
        text.append(f"HbA1c {a1c.value:g} % on {fmt_date(a1c.time)} (policy > {a1c_max:g} %)")
    if glu is not None and glu.value is not None and glu.value > glu_max:
        high.append(glu)
        text.append(f"glucose {glu.value:g} mg/dL on {fmt_date(glu.time)} (policy > {glu_max:g} mg/dL)")
    if not high:
        return None
    return CardSpec(
        rule_id=GLYCEMIC,
        indicator="warning",
        summary=clip(
            "Poor glycaemic control before elective VA: " + "; ".join(t.split(" (")[0] for t in text)
        ),
        detail=detail(
            "Diabetes with poor control raises the risk of infection after augmentation. Optimise glycaemic "
            "control before an elective procedure.",
            _section("Findings", "\n".join(f"- {t}" for t in text)),
            _section("Evidence", evidence_lines([d.evidence for d in diabetes] + [m.evidence for m in high])),
            _section(
                "Policy values used",
                c.policy_lines("hba1c_max_percent", "glucose_max_mg_dl", "glycemic_window_days"),
            ),
        ),
        citation=CITE_GLYCEMIC,
        evidence=tuple(m.evidence for m in high) + tuple(d.evidence for d in diabetes),
        policy_used=c.pv("hba1c_max_percent", "glucose_max_mg_dl", "glycemic_window_days"),
        override_reasons=_reasons(
            ("urgent-indication", "Urgent indication — proceed with peri-operative glucose plan")
        ),
    )


def antithrombotic_order_while_planned(c: RuleContext) -> CardSpec | None:
    drafted = c.scope.drafted_antithrombotics
    vas = c.scope.all_va
    if not drafted or not vas:
        return None
    hits: list[tuple[MedicationFact, Hold, list[str]]] = []
    evidence: list[Evidence] = []
    for med in drafted:
        hold = hold_for(c.policy, med.ingredient, c.renal)
        clashes: list[str] = []
        for va in vas:
            if va.start is None:
                clashes.append(f"{md_escape(va.order.display)} (date not set)")
            elif hold.hours is None or va.start <= c.now + timedelta(hours=hold.hours):
                clashes.append(f"{md_escape(va.order.display)} on {fmt_dt(va.start)}")
            else:
                continue
            if va.order.evidence not in evidence:
                evidence.append(va.order.evidence)
        if clashes:
            hits.append((med, hold, clashes))
            evidence.insert(0, med.evidence)
    if not hits:
        return None
    med, hold, _ = hits[0]
    renal_split = any(h.normal_days is not None or "CrCl" in h.reason for _, h, _ in hits)
    first = min((v.start for v in vas if v.start is not None), default=None)
    when = f"on {fmt_date(first)}" if first else "(date not set)"
    hold_s = fmt_days(hold.days) if hold.days is not None else "unknown"
    lines = [
        f"- **{md_escape(m.display)}** ({m.ingredient}, {m.drug_class}) — hold before the VA: "
        f"{hold_text(h)}. "
        f"Conflicts with: {'; '.join(cl)}."
        for m, h, cl in hits
    ]
    return CardSpec(
        rule_id=ORDER_WHILE_PLANNED,
        indicator="warning",
        summary=clip(
            f"{med.ingredient.capitalize()} ordered while a VA is planned {when}: within its hold of {hold_s}"
        ),
        detail=detail(
            "A vertebral augmentation is planned inside the pre-procedure hold period of the antithrombotic "
            "being ordered. Coordinate with the proceduralist: postpone the start, reschedule the procedure, "
            "or document why both are intended.",
            "\n".join(lines),
            f"Renal function used: {md_escape(c.renal.basis)}." if renal_split else "",
            _section("Policy values used", f"- `antithrombotic_holds` — {md_escape(c.policy.holds_source)}"),
        ),
        citation=CITE_COAG,
        evidence=tuple(evidence) + c.renal.evidence,
        policy_used={f"antithrombotic_holds.{m.ingredient}": _hold_policy(h) for m, h, _ in hits},
        override_reasons=_reasons(
            ("proceduralist-aware", "Coordinated with the proceduralist"),
            ("va-rescheduled", "Procedure will be rescheduled"),
            ("urgent-indication", "Urgent antithrombotic need outweighs procedure timing — documented"),
        ),
    )


Rule = Callable[[RuleContext], CardSpec | None]

# Order: how a clinician reads them when the core sorts within an indicator level (stable sort).
FULL_RULES: tuple[tuple[str, Rule], ...] = (
    (NEURO_RED_FLAGS, neuro_red_flags),
    (INFECTION_ACTIVE, infection_active),
    (LABS_OUT_OF_RANGE, labs_out_of_range),
    (ALLERGY_CEMENT, allergy_cement),
    (ANTITHROMBOTIC_ACTIVE, antithrombotic_active),
    (ORDER_WHILE_PLANNED, antithrombotic_order_while_planned),
    (LABS_MISSING, labs_missing),
    (SCREEN_MISSING, screen_missing),
    (INFECTION_HISTORY, infection_history),
    (CONCORDANCE_MISSING, concordance_missing),
    (CONCORDANCE_DISCORDANT, concordance_discordant),
    (ALLERGY_CONTRAST, allergy_contrast),
    (SEDATION, sedation_cardiopulmonary),
    (GLYCEMIC, glycemic),
    (RISK_FACTORS, risk_factors),
)
ORDER_ONLY_RULES: tuple[tuple[str, Rule], ...] = ((ORDER_WHILE_PLANNED, antithrombotic_order_while_planned),)
