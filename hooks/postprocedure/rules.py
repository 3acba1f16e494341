"""The post-procedure rules (rule catalog v2, V2.6 as amended by V2.11/V2.12), one function per rule id.

Each rule reads a `RuleContext` (facts, policy, the VA timeline; `context.py`) and returns a `PostFinding`
(a catalog `Finding`, built with `make_finding`) or None:
what it judged, how loud it proposes to be, the evidence, the steps, and the orders it asks for. Whether
a finding stands alone or folds into another card, and which card carries each order, is decided in
`present.py`. Text is our paraphrase of the chapter; record text goes through `md_escape`; every number
comes from `Policy`.

To add a rule: write `def my_rule(c: RuleContext) -> PostFinding | None`, add it to `RULES`, give it a
`RuleDoc` in `docs.py` and, if it reads a new source, a line in `prefetch.CHECKS_BY_KEY`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta

from cds_service.contracts import SuggestionSpec, md_escape
from fhir_mappings.facts import Evidence, Measurement, ProcedureFact
from hooks.common import fmt_date
from hooks.common.bone_health import (
    bone_orders,
    bone_steps,
    oncology_condition,
    osteoporosis_therapy,
    recent_dxa,
)
from hooks.common.timing import level_text, thoracic_or_unknown, va_time
from hooks.orders import procedure_reaction_allergy
from hooks.postprocedure.context import (
    BONE_OVERRIDES,
    Order,
    PostFinding,
    RuleContext,
    cond_line,
    ct_leak,
    day_after,
    evidence_of,
    make_finding,
    meas_line,
    num,
    onset_of,
    reason,
    stir_mri,
)

# ---- rule ids (catalog; never rename) ----
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

# ---- citations (chapter = Aydoğdu & Durak 2025; Summary = the increased-pain point-of-care summary) ----
CITE_PCE = (
    "Chapter §3.3.4, Algorithm 2 (suspected PCE); refs [10,25,33–36]; Summary (vital signs for embolism)"
)
CITE_NEURO = "Chapter §3.3.3 (posterior canal leakage), §3.2.2; ref [29]; Summary (radiculopathy, red flags)"
CITE_INFECTION = "Chapter §4.2, Algorithm 3; refs [12,37–39]"
CITE_HEMORRHAGE = "Chapter §3.2.3 (anterior cortical breach: red flags, first actions, imaging); refs [21–24]"
CITE_PLEURAL = "Chapter §3.2.3 (pleural and lung injury at thoracic levels); refs [41–45]"
CITE_PAIN = "Summary (increased pain after vertebroplasty); Chapter §4.1, §4.3 and §5; refs [5,25–28]"
CITE_FRACTURE = "Chapter §4.3 (adjacent-level fractures) and §5; refs [5,25–28]"
CITE_HYPERSENSITIVITY = "Chapter §3.1, Algorithm 1 (suspected cement hypersensitivity); refs [16,17]"
CITE_BONE = "Chapter §5 (bone-health stewardship); ref [40]; DXA interval: institutional policy"
CITE_FOLLOWUP = "Chapter §5 (follow-up pathway); MASTER CHECKLIST 'Post-procedure & Discharge'; ref [40]"

# ---- concept ids (fhir_mappings value sets) ----
SPINAL_DEFICITS: Mapping[str, str] = {
    "new-motor-deficit": "motor deficit",
    "saddle-anesthesia": "saddle anaesthesia",
    "bowel-bladder-dysfunction": "bladder or bowel dysfunction",
    "myelopathy": "myelopathy",
    "cord-compression": "cord compression",
    "cauda-equina": "cauda equina syndrome",
}
RADICULAR = "radiculopathy"
INFECTION_CONCEPTS = (
    "discitis",
    "vertebral-osteomyelitis",
    "epidural-abscess",
    "wound-infection",
    "sepsis-bacteremia",
    "spondylitis",
)
SPINAL_INFECTION = frozenset({"discitis", "vertebral-osteomyelitis", "epidural-abscess", "spondylitis"})
RESPIRATORY_SYMPTOMS = ("dyspnea", "pleuritic-pain", "chest-pain")
_SEVERE_BLEED_TEXT = re.compile(r"retroperiton|psoas", re.IGNORECASE)
_MASSIVE_PCE_TEXT = re.compile(r"massive|intracardiac|right (heart|atri|ventric)|saddle", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------
# post.pce.suspected
# --------------------------------------------------------------------------------------------------------


def spo2_status(c: RuleContext) -> tuple[str, Measurement, ProcedureFact, Measurement | None] | None:
    """Judge the latest post-VA SpO₂ against the patient's own baseline: ("critical"|"warning"|"ok", …)."""
    found = c.latest("spo2", PCE)
    if found is None:
        return None
    m, proc = found
    value = m.value if m.value is not None else 100.0
    base = c.baseline("spo2", proc, c.v("spo2_baseline_days"))
    low_baseline = (
        base is not None and base.value is not None and base.value < c.v("spo2_low_baseline_percent")
    )
    if base is not None and base.value is not None and low_baseline:
        # A chronically low saturation (e.g. COPD): only a fall from the patient's own value counts.
        level = "critical" if base.value - value >= c.v("spo2_drop_low_baseline_points") else "ok"
    elif value < c.v("spo2_critical_percent"):
        level = "critical"
    elif value < c.v("spo2_hypoxemia_percent"):
        level = "warning"
    elif base is not None and base.value is not None and base.value - value >= c.v("spo2_drop_points"):
        level = "warning"
    else:
        level = "ok"
    return level, m, proc, base


def pce_suspected(c: RuleContext) -> PostFinding | None:
    lines: list[str] = []
    evidence: list[Evidence] = []
    anchor: ProcedureFact | None = None
    critical = warning = False
    spo2 = spo2_status(c)
    hypoxemic = False
    if spo2 is not None:
        level, m, proc, base = spo2
        hypoxemic = m.value is not None and m.value < c.v("spo2_hypoxemia_percent")
        if level != "ok":
            critical, warning = critical or level == "critical", warning or level == "warning"
            base_text = f" (baseline {num(base.value)} % on {fmt_date(base.time)})" if base else ""
            lines.append(meas_line("SpO₂", m, " %") + base_text)
            evidence += [m.evidence, *((base.evidence,) if base else ())]
            anchor = proc
    hypox_conds = c.conditions(("hypoxemia",), PCE)
    hypoxemic = hypoxemic or bool(hypox_conds)
    rr = c.latest("resp_rate", PCE)
    tachypnoea = rr is not None and (rr[0].value or 0) > c.v("resp_rate_max")
    hr = c.latest("heart_rate", PCE)
    tachycardia = hr is not None and (hr[0].value or 0) > c.v("heart_rate_max")
    symptoms = c.conditions(RESPIRATORY_SYMPTOMS, PCE)
    pe = c.conditions(("pulmonary-embolism",), PCE)
    if pe:
        critical = True
    if symptoms and (hypoxemic or tachypnoea or tachycardia):
        critical = True
    elif symptoms or tachypnoea or hypox_conds:
        warning = True
    for cond, proc in (*pe, *symptoms, *hypox_conds):
        lines.append(cond_line(cond))
        evidence.append(cond.evidence)
        anchor = anchor or proc
    for found, label, relevant in (
        (rr, "Respiratory rate", tachypnoea),
        (hr, "Heart rate", tachycardia and symptoms),
    ):
        if found is not None and relevant:
            lines.append(meas_line(label, found[0], "/min"))
            evidence.append(found[0].evidence)
            anchor = anchor or found[1]
    if not (critical or warning) or anchor is None:
        return None
    xray = Order("chest-xray-portable" if hypoxemic else "chest-xray", True)
    policy = {
        "spo2_critical_percent": c.v("spo2_critical_percent"),
        "spo2_hypoxemia_percent": c.v("spo2_hypoxemia_percent"),
        "spo2_low_baseline_percent": c.v("spo2_low_baseline_percent"),
        "spo2_drop_low_baseline_points": c.v("spo2_drop_low_baseline_points"),
        "spo2_drop_points": c.v("spo2_drop_points"),
        "spo2_baseline_days": c.v("spo2_baseline_days"),
        "resp_rate_max": c.v("resp_rate_max"),
        "heart_rate_max": c.v("heart_rate_max"),
        "window_days": c.window(PCE),
    }
    when = day_after(c, anchor, c.now)
    if critical:
        massive = any(_MASSIVE_PCE_TEXT.search(cond.display) for cond, _ in pe)
        orders = [xray, Order("ecg", True), Order("ctpa", True)]
        if massive:
            orders += [
                Order("consult-interventional-radiology", True),
                Order("consult-cardiothoracic-surgery", True),
            ]
        return make_finding(
            PCE,
            "critical",
            f"Possible pulmonary cement embolism {when}: oxygen, ECG and chest X-ray now, then CTPA",
            tuple(lines),
            (
                "Give oxygen; continuous SpO₂, vital signs and a 12-lead ECG.",
                f"{'Portable AP chest' if hypoxemic else 'Chest'} X-ray, then CT pulmonary angiography.",
                "Small, no symptoms: observe; symptomatic or central: anticoagulate if bleeding risk allows.",
                "Massive or intracardiac cement: urgent interventional radiology / cardiothoracic review.",
            ),
            evidence_of(anchor, *evidence),
            policy,
            CITE_PCE,
            anchor,
            tuple(orders),
            reason=reason("Suspected pulmonary cement embolism", anchor),
        )
    return make_finding(
        PCE,
        "warning",
        f"Breathing or saturation changed {when}: consider pulmonary cement embolism and assess",
        tuple(lines),
        (
            "Examine; repeat SpO₂ (room air), respiratory rate and heart rate; 12-lead ECG.",
            f"{'Portable AP chest' if hypoxemic else 'Chest'} X-ray.",
            "CT pulmonary angiography if saturation falls further or symptoms progress.",
        ),
        evidence_of(anchor, *evidence),
        policy,
        CITE_PCE,
        anchor,
        (xray, Order("ecg", True)),
        reason=reason("Possible pulmonary cement embolism", anchor),
    )


# --------------------------------------------------------------------------------------------------------
# post.pleural.suspected
# --------------------------------------------------------------------------------------------------------


def pleural_suspected(c: RuleContext) -> PostFinding | None:
    """Documented pneumothorax → own card; hemothorax → folded into hemorrhage; symptoms → folded into PCE."""
    policy = {"window_days": c.window(PLEURAL)}
    documented = [
        (cond, p)
        for cond, p in c.conditions(("pneumothorax", "hemothorax"), PLEURAL)
        if thoracic_or_unknown(p)
    ]
    pneumo = [
        (cond, p)
        for cond, p in documented
        if "pneumothorax" in cond.concepts and "hemothorax" not in cond.concepts
    ]
    hemo = [(cond, p) for cond, p in documented if "hemothorax" in cond.concepts]
    if pneumo:
        cond, proc = pneumo[0]
        return make_finding(
            PLEURAL,
            "critical",
            f"Pneumothorax {day_after(c, proc, onset_of(cond))} (thoracic level): assess and image",
            tuple(cond_line(x) for x, _ in pneumo),
            (
                "Assess breathing and circulation; resuscitate if unstable.",
                "Point-of-care ultrasound and/or chest X-ray to confirm and size it.",
                "Small and stable: oxygen and observation; symptomatic or large: aspiration or chest drain.",
                "Persistent air leak: thoracic surgery (BTS 2023).",
            ),
            evidence_of(proc, *(x.evidence for x, _ in pneumo)),
            policy,
            CITE_PLEURAL,
            proc,
            (Order("chest-xray-portable", True),),
            reason=reason("Pneumothorax", proc),
        )
    if hemo:
        cond, proc = hemo[0]
        return make_finding(
            PLEURAL,
            "critical",
            "Hemothorax after a thoracic VA",
            (cond_line(cond),),
            (),
            evidence_of(proc, cond.evidence),
            policy,
            CITE_PLEURAL,
            proc,
            fold_into=(HEMORRHAGE,),
            fold_line="Thoracic level: chest drain for hemothorax; embolisation or VATS if bleeding goes on.",
        )
    # Respiratory symptoms or desaturation after a thoracic (or level-unknown) VA: the same evidence as the
    # PCE card, so it is a line of that card, never a second critical card.
    symptoms = [
        (cond, p)
        for cond, p in c.conditions((*RESPIRATORY_SYMPTOMS, "hypoxemia"), PLEURAL)
        if thoracic_or_unknown(p)
    ]
    spo2 = spo2_status(c)
    desat = spo2 is not None and spo2[0] != "ok" and thoracic_or_unknown(spo2[2])
    if spo2 is not None and desat:
        within = c.timeline.anchor_in_window(spo2[1].time, c.window(PLEURAL), c.now)
        desat = within is not None
    if not symptoms and not desat:
        return None
    host: ProcedureFact | None = symptoms[0][1] if symptoms else spo2[2] if spo2 is not None else None
    evidence = [cond.evidence for cond, _ in symptoms] + (
        [spo2[1].evidence] if spo2 is not None and desat else []
    )
    return make_finding(
        PLEURAL,
        "warning",
        "At a thoracic level also consider pneumothorax or hemothorax",
        tuple(cond_line(cond) for cond, _ in symptoms),
        ("Point-of-care ultrasound or chest X-ray for pneumothorax; check Hb for hemothorax.",),
        evidence_of(host, *evidence),
        policy,
        CITE_PLEURAL,
        host,
        (Order("chest-xray-portable" if desat else "chest-xray", True),),
        fold_into=(PCE, HEMORRHAGE),
        fold_line="At a thoracic level also consider pneumothorax or hemothorax — check Hb.",
        reason=reason("Possible pneumothorax or hemothorax", host),
    )


# --------------------------------------------------------------------------------------------------------
# post.neuro.deficit
# --------------------------------------------------------------------------------------------------------


def neuro_deficit(c: RuleContext) -> PostFinding | None:
    recent_days = c.v("post_neuro_recent_days")
    spinal = c.conditions(tuple(SPINAL_DEFICITS), NEURO)
    radicular = [
        (x, p) for x, p in c.conditions((RADICULAR,), NEURO) if not (x.concepts & set(SPINAL_DEFICITS))
    ]
    policy = {"post_neuro_recent_days": recent_days, "window_days": c.window(NEURO)}
    # Anchored conditions always have a time (onset or recordedDate), so `or c.now` never applies.
    recent = [(x, p) for x, p in spinal if c.now - (onset_of(x) or c.now) <= timedelta(days=recent_days)]
    if recent:
        cond, proc = recent[0]
        kind = next(SPINAL_DEFICITS[k] for k in SPINAL_DEFICITS if k in cond.concepts)
        start = va_time(proc)
        began = onset_of(cond)
        late = start is not None and began is not None and began - start > timedelta(days=30)
        steps = [
            "Examine and record motor, sensory, saddle and sphincter function now.",
            f"Urgent MRI (STIR) and CT at {md_escape(level_text(proc))} for canal cement or compression.",
            "Consider a short high-dose corticosteroid bridge if not contraindicated.",
            "Compressive cement or collection with a matching deficit: spine surgery for decompression.",
        ]
        if late:
            steps[1] = steps[1].replace(
                "for canal cement",
                "for late causes (adjacent-fracture retropulsion, epidural abscess) or canal cement",
            )
        return make_finding(
            NEURO,
            "critical",
            f"New {kind} {day_after(c, proc, onset_of(cond))}: urgent spine MRI/CT and spine surgery review",
            tuple(cond_line(x) for x, _ in recent),
            tuple(steps),
            evidence_of(proc, *(x.evidence for x, _ in recent)),
            policy,
            CITE_NEURO,
            proc,
            (stir_mri(proc), ct_leak(proc), Order("consult-spine-surgery", True)),
            reason=reason("New neurological deficit", proc),
        )
    if spinal:
        cond, proc = spinal[0]
        kind = next(SPINAL_DEFICITS[k] for k in SPINAL_DEFICITS if k in cond.concepts)
        return make_finding(
            NEURO,
            "warning",
            f"{kind.capitalize()} began after the VA, over {recent_days:g} days ago: confirm imaging, plan",
            tuple(cond_line(x) for x, _ in spinal),
            (
                "Compare the current exam with the onset exam; any progression is an emergency.",
                f"If not yet imaged: MRI (STIR) and CT of the spine at {md_escape(level_text(proc))}.",
                "Spine surgery review for compressive cement, retropulsion or an epidural collection.",
            ),
            evidence_of(proc, *(x.evidence for x, _ in spinal)),
            policy,
            CITE_NEURO,
            proc,
            (stir_mri(proc, False), ct_leak(proc, False), Order("consult-spine-surgery")),
            reason=reason("Neurological deficit", proc),
        )
    if radicular:
        cond, proc = radicular[0]
        return make_finding(
            NEURO,
            "warning",
            f"Radicular pain {day_after(c, proc, onset_of(cond))}: examine; CT for a foraminal cement leak",
            tuple(cond_line(x) for x, _ in radicular),
            (
                "Examine lower-limb strength and sensation; weakness, saddle or sphincter signs are urgent.",
                f"CT of the spine at {md_escape(level_text(proc))} for cement in a foramen.",
                "Radicular pain may respond to an epidural steroid injection (Summary).",
            ),
            evidence_of(proc, *(x.evidence for x, _ in radicular)),
            policy,
            CITE_NEURO,
            proc,
            (ct_leak(proc),),
            reason=reason("Radicular pain", proc),
        )
    return None


# --------------------------------------------------------------------------------------------------------
# post.infection.suspected
# --------------------------------------------------------------------------------------------------------


def infection_suspected(c: RuleContext) -> PostFinding | None:
    lines: list[str] = []
    evidence: list[Evidence] = []
    anchor: ProcedureFact | None = None
    temp = c.latest("temperature", INFECTION)
    febrile = temp is not None and (temp[0].value or 0) >= c.v("fever_celsius")
    if temp is not None and febrile:
        lines.append(meas_line("Temperature", temp[0], " °C"))
        evidence.append(temp[0].evidence)
        anchor = temp[1]
    conds = c.conditions(INFECTION_CONCEPTS, INFECTION)
    for cond, proc in conds:
        lines.append(cond_line(cond))
        evidence.append(cond.evidence)
        anchor = anchor or proc
    culture = False
    for m in c.inp_facts.measurements:
        if m.kind == "blood_culture" and m.positive:
            bc_proc = c.timeline.anchor_in_window(m.time, c.window(INFECTION), c.now)
            if bc_proc is not None:
                culture = True
                lines.append(f"Positive blood culture on {fmt_date(m.time)}")
                evidence.append(m.evidence)
                anchor = anchor or bc_proc
    critical = febrile or bool(conds) or culture
    for kind, label, unit, key in (
        ("wbc", "WBC", " ×10⁹/L", "wbc_max"),
        ("crp", "CRP", " mg/L", "crp_max_mg_l"),
        ("esr", "ESR", " mm/h", "esr_max_mm_h"),
    ):
        found = c.latest(kind, INFECTION)
        if found is not None and (found[0].value or 0) > c.v(key):
            lines.append(meas_line(label, found[0], unit))
            evidence.append(found[0].evidence)
            anchor = anchor or found[1]
    if anchor is None:
        return None
    policy = {
        "fever_celsius": c.v("fever_celsius"),
        "wbc_max": c.v("wbc_max"),
        "crp_max_mg_l": c.v("crp_max_mg_l"),
        "esr_max_mm_h": c.v("esr_max_mm_h"),
        "window_days": c.window(INFECTION),
    }
    orders = c.lab_orders(Order("cbc", True), Order("crp", True), Order("esr"))
    if febrile:
        orders.append(Order("blood-cultures", True))
    orders.append(Order("mri-spine-contrast", True))
    steps = (
        "CBC, CRP and ESR; blood cultures if febrile.",
        "Contrast-enhanced spine MRI for discitis, osteomyelitis or an epidural/paravertebral abscess.",
        "Stable: image-guided aspiration/biopsy for culture before antibiotics; unstable: IV antibiotics.",
        "Spine surgery for deficit, instability, undrainable abscess or failed therapy; expect 6–12 weeks.",
    )
    if critical:
        orders += [Order("image-guided-aspiration", True), Order("consult-infectious-diseases")]
        if any(x.concepts & {"epidural-abscess"} for x, _ in conds):
            orders.append(Order("consult-spine-surgery", True))
        return make_finding(
            INFECTION,
            "critical",
            f"Possible infection {day_after(c, anchor, c.now)}: cultures, contrast MRI, aspiration",
            tuple(lines),
            steps,
            evidence_of(anchor, *evidence),
            policy,
            CITE_INFECTION,
            anchor,
            tuple(orders),
            reason=reason("Suspected spinal infection", anchor),
        )
    return make_finding(
        INFECTION,
        "warning",
        f"Raised inflammatory markers {day_after(c, anchor, c.now)}: exclude a spinal infection",
        tuple(lines),
        ("Correlate clinically: fever, wound, new back pain.", *steps[:2]),
        evidence_of(anchor, *evidence),
        policy,
        CITE_INFECTION,
        anchor,
        tuple(orders),
        reason=reason("Raised inflammatory markers", anchor),
    )


# --------------------------------------------------------------------------------------------------------
# post.hemorrhage.suspected
# --------------------------------------------------------------------------------------------------------


def hemorrhage_suspected(c: RuleContext) -> PostFinding | None:
    drop_min = c.v("hemoglobin_drop_g_dl")
    critical_lines: list[str] = []
    warning_lines: list[str] = []
    evidence: list[Evidence] = []
    anchor: ProcedureFact | None = None
    hb = c.latest("hemoglobin", HEMORRHAGE)
    if hb is not None:
        m, proc = hb
        base = c.baseline("hemoglobin", proc, c.v("hb_baseline_days"))
        value = m.value or 0.0
        if base is not None and base.value is not None:
            if base.value - value >= drop_min:
                critical_lines.append(
                    f"Hb {num(value)} g/dL on {fmt_date(m.time)}, down {base.value - value:.1f} from "
                    f"{num(base.value)} before the VA ({fmt_date(base.time)})"
                )
                evidence += [m.evidence, base.evidence]
                anchor = proc
        else:
            # No baseline in the 30 days before the VA: only a fall between post-VA values, or a low value.
            start = va_time(proc)
            post_vals = [
                x
                for x in c.inp_facts.measurements_of("hemoglobin", until=c.now)
                if x.value is not None and x.time is not None and start is not None and x.time > start
            ]
            peak = max(post_vals, key=lambda x: x.value or 0.0) if post_vals else None
            if peak is not None and peak.value is not None and peak.value - value >= drop_min:
                warning_lines.append(
                    f"Hb {num(value)} g/dL on {fmt_date(m.time)}, down {peak.value - value:.1f} since "
                    f"{fmt_date(peak.time)} (no pre-VA baseline)"
                )
                evidence += [m.evidence, peak.evidence]
                anchor = proc
            elif value < c.v("hb_low_g_dl"):
                warning_lines.append(meas_line("Hb", m, " g/dL") + " (no pre-VA baseline)")
                evidence.append(m.evidence)
                anchor = proc
    sbp = c.latest("systolic_bp", HEMORRHAGE)
    if sbp is not None and (sbp[0].value or 999) < c.v("systolic_bp_min"):
        critical_lines.append(meas_line("Systolic BP", sbp[0], " mmHg"))
        evidence.append(sbp[0].evidence)
        anchor = anchor or sbp[1]
    for cond, proc in c.conditions(("hemothorax", "hemorrhage"), HEMORRHAGE):
        severe = "hemothorax" in cond.concepts or bool(_SEVERE_BLEED_TEXT.search(cond.display))
        (critical_lines if severe else warning_lines).append(cond_line(cond))
        evidence.append(cond.evidence)
        anchor = anchor or proc
    if anchor is None:
        return None
    policy = {
        "hemoglobin_drop_g_dl": drop_min,
        "hb_baseline_days": c.v("hb_baseline_days"),
        "hb_low_g_dl": c.v("hb_low_g_dl"),
        "systolic_bp_min": c.v("systolic_bp_min"),
        "window_days": c.window(HEMORRHAGE),
    }
    if critical_lines:
        return make_finding(
            HEMORRHAGE,
            "critical",
            f"Possible hemorrhage {day_after(c, anchor, c.now)}: treat as active bleeding, CT angiography",
            tuple(critical_lines + warning_lines),
            (
                "Two large-bore IV lines, cross-match, resuscitate and transfuse as needed.",
                "Reverse anticoagulation where indicated.",
                "CT angiography chest/abdomen/pelvis; unstable: straight to IR or theatre.",
                "Involve interventional radiology and vascular surgery early.",
            ),
            evidence_of(anchor, *evidence),
            policy,
            CITE_HEMORRHAGE,
            anchor,
            (
                Order("cta-cap", True),
                Order("cbc", True),
                Order("type-and-screen", True),
                Order("consult-interventional-radiology"),
                Order("consult-vascular-surgery"),
            ),
            reason=reason("Suspected hemorrhage", anchor),
        )
    return make_finding(
        HEMORRHAGE,
        "warning",
        f"Bleeding or a falling Hb {day_after(c, anchor, c.now)}: check the access site and repeat Hb",
        tuple(warning_lines),
        (
            "Inspect the access site and back; compress and mark any hematoma.",
            "Repeat Hb and vital signs; escalate to CT angiography if Hb keeps falling or BP drops.",
            "Review anticoagulant and antiplatelet doses.",
        ),
        evidence_of(anchor, *evidence),
        policy,
        CITE_HEMORRHAGE,
        anchor,
        (Order("cbc", True),),
        reason=reason("Possible bleeding", anchor),
    )


# --------------------------------------------------------------------------------------------------------
# post.pain.increased
# --------------------------------------------------------------------------------------------------------


def pain_increased(c: RuleContext) -> PostFinding | None:
    lines: list[str] = []
    evidence: list[Evidence] = []
    anchor: ProcedureFact | None = None
    found = c.latest("pain", PAIN)
    if found is not None:
        latest, proc = found
        start = va_time(proc)
        assert start is not None and latest.time is not None and latest.value is not None
        before = [
            m
            for m in c.inp_facts.measurements_of("pain", until=c.now)
            if m.time is not None and m.value is not None and start < m.time < latest.time
        ]
        nadir = min(before, key=lambda m: m.value or 0.0) if before else None
        rise = latest.value - nadir.value if nadir is not None and nadir.value is not None else 0.0
        since_va = latest.time - start
        severe = (
            latest.value >= c.v("pain_severe_score")
            and since_va > timedelta(hours=c.v("pain_severe_after_hours"))
            and since_va <= timedelta(days=c.v("pain_severe_days"))
        )
        if nadir is not None and rise >= c.v("pain_rise_points"):
            lines.append(
                f"Pain {num(latest.value)}/10 on {fmt_date(latest.time)}, up {rise:g} from "
                f"{num(nadir.value)}/10 on {fmt_date(nadir.time)}"
            )
            evidence += [latest.evidence, nadir.evidence]
            anchor = proc
        elif severe:
            lines.append(
                f"Pain {num(latest.value)}/10 on {fmt_date(latest.time)}, {day_after(c, proc, latest.time)}"
            )
            evidence.append(latest.evidence)
            anchor = proc
    for cond, proc in c.conditions(("back-pain",), PAIN):
        lines.append(cond_line(cond))
        evidence.append(cond.evidence)
        anchor = anchor or proc
    if anchor is None:
        return None
    temp = c.latest("temperature", INFECTION)
    crp = c.latest("crp", INFECTION)
    inflamed = (temp is not None and (temp[0].value or 0) >= c.v("fever_celsius")) or (
        crp is not None and (crp[0].value or 0) > c.v("crp_max_mg_l")
    )
    orders = [stir_mri(anchor), ct_leak(anchor), *c.lab_orders(Order("cbc"), Order("crp"))]
    if inflamed:
        orders.append(Order("mri-spine-contrast", True))
    return make_finding(
        PAIN,
        "warning",
        f"Pain has risen or is severe {day_after(c, anchor, c.now)}: MRI with STIR and CT, neuro exam",
        tuple(lines),
        (
            "MRI with STIR for a new adjacent or index-level fracture; CT for cement leakage.",
            "Examine lower-limb strength and sensation; check SpO₂, HR and temperature.",
            "Causes: adjacent fracture, leak, infection, pedicle fracture, myofascial or transient pain.",
            "New acute fracture with refractory pain: repeat augmentation is reasonable.",
        ),
        evidence_of(anchor, *evidence),
        {
            "pain_rise_points": c.v("pain_rise_points"),
            "pain_severe_score": c.v("pain_severe_score"),
            "pain_severe_days": c.v("pain_severe_days"),
            "pain_severe_after_hours": c.v("pain_severe_after_hours"),
            "window_days": c.window(PAIN),
        },
        CITE_PAIN,
        anchor,
        tuple(orders),
        reason=reason("Increased back pain", anchor),
    )


# --------------------------------------------------------------------------------------------------------
# post.fracture.adjacent
# --------------------------------------------------------------------------------------------------------


def fracture_adjacent(c: RuleContext) -> PostFinding | None:
    found = [
        (x, p)
        for x, p in c.conditions(("vertebral-fracture",), FRACTURE, current_only=False)
        if not x.followup_encounter  # ICD-10-CM 7th character D/G/K/P/S: an old fracture revisited
    ]
    if not found:
        return None
    cond, proc = found[0]
    return make_finding(
        FRACTURE,
        "warning",
        f"New vertebral fracture {day_after(c, proc, onset_of(cond))}: MRI to confirm, optimise bone therapy",
        tuple(cond_line(x) for x, _ in found),
        (
            "Confirm acuity and level with MRI (STIR edema); compare with the treated level.",
            "Start or optimise osteoporosis therapy with calcium and vitamin D.",
            "Treat conservatively first; augment the new level if pain stays refractory.",
        ),
        evidence_of(proc, *(x.evidence for x, _ in found)),
        {"window_days": c.window(FRACTURE)},
        CITE_FRACTURE,
        proc,
        (stir_mri(proc),),
        reason=reason("New vertebral fracture", proc),
    )


# --------------------------------------------------------------------------------------------------------
# post.hypersensitivity
# --------------------------------------------------------------------------------------------------------


def hypersensitivity(c: RuleContext) -> PostFinding | None:
    found = c.conditions(("anaphylaxis", "hypersensitivity-reaction"), HYPERSENSITIVITY, current_only=False)
    if not found:
        return None
    found.sort(key=lambda item: ("anaphylaxis" not in item[0].concepts, onset_of(item[0]) or c.now))
    cond, proc = found[0]
    onset = onset_of(cond) or c.now
    since = c.now - onset
    anaphylaxis = "anaphylaxis" in cond.concepts
    tryptase_due = since <= timedelta(hours=c.v("tryptase_hours"))
    acute = anaphylaxis and since <= timedelta(hours=c.v("anaphylaxis_critical_hours"))
    tryptase_done = bool(c.inp_facts.measurements_of("tryptase", since=onset, until=c.now))
    steps: list[str] = []
    if acute:
        steps.append(
            "Treat as anaphylaxis per protocol: IM epinephrine, antihistamine, corticosteroid, fluids."
        )
    else:
        steps.append(
            "Check the reaction has settled; antihistamine for skin symptoms; watch for a late phase."
        )
    if tryptase_due and not tryptase_done:
        steps.append(
            "Serum tryptase now (within 4 h of onset), and a baseline level ≥ 24 h after it settles."
        )
    else:
        steps.append("Baseline serum tryptase at least 24 h after the reaction has settled.")
    steps += [
        "Record products used: cement brand/lot, antibiotic, contrast, antiseptic, latex, local anaesthetic.",
        "Refer to allergy/immunology for patch testing or LTT; avoid re-exposure until the culprit is known.",
    ]
    orders = [Order("consult-allergy", True)]
    if tryptase_due and not tryptase_done:
        orders.insert(0, Order("tryptase", True, label="Order serum tryptase (acute, within 4 h of onset)"))
    extra: tuple[SuggestionSpec, ...] = ()
    recorded = any(
        a.active and ("bone-cement" in a.concepts or "vertebral augmentation" in a.display.lower())
        for a in c.inp_facts.allergies
    )
    if not recorded:
        resource = procedure_reaction_allergy(
            c.patient_id,
            reaction=cond.display or "hypersensitivity reaction",
            onset=onset,
            anaphylaxis=anaphylaxis,
            note=(
                f"Reaction after vertebral augmentation on {fmt_date(va_time(proc))} "
                f"({proc.evidence.reference}); culprit undetermined: confirm by allergy testing."
            ),
        )
        extra = (
            SuggestionSpec(
                label="Record the reaction (culprit undetermined, unconfirmed)",
                resources=(resource,),
                description="Create an unconfirmed AllergyIntolerance: reaction during the augmentation",
            ),
        )
    kind = "Anaphylaxis" if anaphylaxis else "Hypersensitivity reaction"
    hours = f"{since.total_seconds() / 3600:.0f} h ago"
    return make_finding(
        HYPERSENSITIVITY,
        "critical" if acute else "warning",
        (
            f"{kind} {hours} after the VA: treat per anaphylaxis protocol, tryptase, allergy referral"
            if acute
            else f"{kind} after the VA ({hours}): record it, baseline tryptase, allergy referral"
        ),
        tuple(cond_line(x) for x, _ in found),
        tuple(steps),
        evidence_of(proc, *(x.evidence for x, _ in found)),
        {
            "tryptase_hours": c.v("tryptase_hours"),
            "anaphylaxis_critical_hours": c.v("anaphylaxis_critical_hours"),
            "window_days": c.window(HYPERSENSITIVITY),
        },
        CITE_HYPERSENSITIVITY,
        proc,
        tuple(orders),
        extra,
        reason=reason("Hypersensitivity reaction", proc),
    )


# --------------------------------------------------------------------------------------------------------
# post.bone-health.untreated and post.followup
# --------------------------------------------------------------------------------------------------------


def bone_health_untreated(c: RuleContext) -> PostFinding | None:
    latest = c.timeline.latest
    start = va_time(latest) if latest is not None else None
    if latest is None or start is None or c.now - start > timedelta(days=c.window(BONE_HEALTH)):
        return None
    if osteoporosis_therapy(c.inp_facts, c.policy, c.now).any:
        return None
    if oncology_condition(c.inp_facts, c.now) is not None:
        return None  # oncology manages bone health in myeloma and skeletal metastasis
    dxa = recent_dxa(c.inp_facts, c.now, c.v("dxa_interval_years"))
    return make_finding(
        BONE_HEALTH,
        "warning",
        "No osteoporosis therapy found after vertebral augmentation: start a bone-health plan",
        ("No active anti-resorptive or anabolic therapy, and no recent injectable dose.",),
        bone_steps(c.policy, dxa),
        evidence_of(latest, *((dxa,) if dxa else ())),
        {
            "zoledronic_interval_months": c.v("zoledronic_interval_months"),
            "denosumab_interval_months": c.v("denosumab_interval_months"),
            "dxa_interval_years": c.v("dxa_interval_years"),
            "window_days": c.window(BONE_HEALTH),
        },
        CITE_BONE,
        latest,
        tuple(Order(x, x == "dxa") for x in bone_orders(c.inp_facts, c.policy, c.now)),
        reason=reason("Osteoporosis not treated", latest),
        overrides=BONE_OVERRIDES,
    )


FOLLOWUP_STEPS = (
    "2–6 weeks: pain and function, analgesic use, wound check.",
    "Ask about fever, wound problems, new radicular pain or weakness, breathlessness or chest pain.",
    "Image only for new or worsening pain or neurological symptoms.",
    "3–6 months: bone-health review and new-fracture screen.",
)


def followup(c: RuleContext) -> PostFinding | None:
    latest = c.timeline.latest
    start = va_time(latest) if latest is not None else None
    if latest is None or start is None or c.now - start > timedelta(days=c.window(FOLLOWUP)):
        return None
    return make_finding(
        FOLLOWUP,
        "info",
        f"Follow-up after the VA of {fmt_date(start)}: review pain, red flags and bone health",
        (f"Last vertebral augmentation {(c.now - start).days} day(s) ago; no complication found.",),
        FOLLOWUP_STEPS,
        (latest.evidence,),
        {"window_days": c.window(FOLLOWUP)},
        CITE_FOLLOWUP,
        latest,
    )


Rule = Callable[[RuleContext], PostFinding | None]

# (check name for sys.check-failed, rule). Order = the order cards are presented within a severity.
RULES: tuple[tuple[str, Rule], ...] = (
    (PCE, pce_suspected),
    (NEURO, neuro_deficit),
    (HEMORRHAGE, hemorrhage_suspected),
    (INFECTION, infection_suspected),
    (PLEURAL, pleural_suspected),
    (HYPERSENSITIVITY, hypersensitivity),
    (PAIN, pain_increased),
    (FRACTURE, fracture_adjacent),
    (BONE_HEALTH, bone_health_untreated),
)
