"""Rule documentation of the post-procedure services: one `RuleDoc` per rule id (`/docs/rules/<id>`).

The rule page is where the thresholds live for a reader (the policy keys below are rendered with their
values and sources); cards carry them only in `org.va-cds.policy`.
"""

from __future__ import annotations

from cds_service.contracts import Indicator, RuleDoc
from hooks.common import CHECK_FAILED_DOC
from hooks.postprocedure import rules as r

HOOKS = ("encounter-start", "patient-view")
_AFTER = (
    "A finding counts only when it is dated after a VA's start, inside the rule's window from the most "
    "recent VA before it, and not after now; anything before the VA is the patient's baseline."
)


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
    return RuleDoc(rule_id, title, indicator, checks, reads, steps, citation, policy_keys, HOOKS)


RULE_DOCS: tuple[RuleDoc, ...] = (
    _doc(
        r.PCE,
        "Suspected pulmonary cement embolism",
        "critical",
        "The latest SpO₂ after the VA is judged against the patient's own pre-VA baseline (latest value in "
        "the baseline days before the VA). Critical: SpO₂ below the critical limit, or — when the baseline "
        "is "
        "below the low-baseline cut — a fall of the low-baseline drop from it instead; dyspnea or pleuritic/"
        "chest pain together with hypoxemia (SpO₂ below the hypoxemia limit), a respiratory rate or a heart "
        "rate above its limit; a pulmonary embolism diagnosis. Warning: SpO₂ in the hypoxemia band with a "
        "normal or no baseline, a fall of the drop points from a normal baseline, new dyspnea or chest pain "
        "alone, or a fast respiratory rate alone. A fast heart rate alone, or a chronically low SpO₂ that "
        "has "
        "not fallen, raises nothing. At a thoracic level the card also names pneumothorax and hemothorax. "
        + _AFTER,
        (
            "SpO₂ (LOINC 59408-5, 2708-6), latest after the VA; baseline before the VA",
            "Respiratory rate (9279-1), heart rate (8867-4): latest values",
            "Conditions/Observations: pulmonary embolism, dyspnea, pleuritic or chest pain, hypoxemia",
        ),
        (
            "Oxygen, continuous SpO₂, vital signs, 12-lead ECG (stat on a critical card)",
            "Chest X-ray — the portable AP view (LOINC 36572-6) for a hypoxic patient",
            "CT pulmonary angiography when symptomatic or hypoxic",
            "Risk-stratify: observe small/asymptomatic; anticoagulate symptomatic if bleeding risk allows; "
            "massive or intracardiac cement → interventional radiology / cardiothoracic consult",
        ),
        r.CITE_PCE,
        (
            "spo2_critical_percent",
            "spo2_hypoxemia_percent",
            "spo2_low_baseline_percent",
            "spo2_drop_low_baseline_points",
            "spo2_drop_points",
            "spo2_baseline_days",
            "resp_rate_max",
            "heart_rate_max",
            "windows_days.post.pce.suspected",
        ),
    ),
    _doc(
        r.NEURO,
        "Neurological deficit after VA",
        "critical",
        "Critical for a motor deficit, saddle anaesthesia, bladder/bowel dysfunction, myelopathy, cord "
        "compression or cauda equina syndrome whose onset (or recorded date) is after the VA and within the "
        "recent-onset days of now, at any time in the look-back; after day 30 the card names late causes "
        "(adjacent-fracture retropulsion, epidural abscess). Warning for such a deficit whose onset is after "
        "the VA but older than the recent-onset days, and for radicular pain or radiculopathy alone. A "
        "deficit documented before the VA is baseline. " + _AFTER,
        ("Conditions/Observations: neurological deficits and radiculopathy (terminology §5)",),
        (
            "Critical: examine now; urgent MRI (STIR) and CT at the treated level; consider a short "
            "high-dose "
            "steroid bridge; spine surgery for compressive cement",
            "Radicular pain alone: examine; CT for a foraminal leak; epidural steroid injection may help "
            "(Summary) — no high-dose steroids",
        ),
        r.CITE_NEURO,
        ("post_neuro_recent_days", "windows_days.post.neuro.deficit"),
    ),
    _doc(
        r.INFECTION,
        "Suspected infection after VA",
        "critical",
        "Critical for a latest temperature at or above the fever threshold, a positive blood culture, or a "
        "discitis / osteomyelitis / epidural abscess / wound infection / sepsis diagnosis; warning when only "
        "the latest WBC, CRP or ESR is above its limit. " + _AFTER,
        (
            "Temperature (8310-5, 8331-1)",
            "WBC (6690-2), CRP (1988-5), ESR (30341-2): latest values",
            "Blood culture (600-7)",
            "Infection conditions (terminology §5)",
        ),
        (
            "CBC, CRP/ESR; blood cultures if febrile",
            "MRI with contrast",
            "Image-guided aspiration/biopsy before antibiotics when stable",
            "Surgical consult indications; 6–12 weeks of therapy",
        ),
        r.CITE_INFECTION,
        (
            "fever_celsius",
            "wbc_max",
            "crp_max_mg_l",
            "esr_max_mm_h",
            "post_result_current_hours",
            "windows_days.post.infection.suspected",
        ),
    ),
    _doc(
        r.HEMORRHAGE,
        "Suspected hemorrhage after VA",
        "critical",
        "Critical for a latest Hb at least the drop amount below the latest Hb in the baseline days before "
        "the "
        "VA (older baselines are not used), a latest systolic BP below the limit, a hemothorax, or a "
        "retroperitoneal or psoas hematoma. Warning for an access-site/back hematoma or unspecified "
        "bleeding, "
        "and — without a pre-VA baseline — for a fall of the drop amount between post-VA values or a post-VA "
        "Hb below the low limit. " + _AFTER,
        (
            "Hemoglobin (718-7): latest after the VA; baseline in the days before it",
            "Systolic BP (8480-6, 85354-9)",
            "Conditions: hemothorax, hemorrhage/hematoma (site read from the text)",
        ),
        (
            "Critical: resuscitate, reverse anticoagulation, CTA chest/abdomen/pelvis, IR / vascular surgery",
            "Warning: check the access site and repeat Hb",
        ),
        r.CITE_HEMORRHAGE,
        (
            "hemoglobin_drop_g_dl",
            "hb_baseline_days",
            "hb_low_g_dl",
            "systolic_bp_min",
            "windows_days.post.hemorrhage.suspected",
        ),
    ),
    _doc(
        r.PLEURAL,
        "Pneumothorax or hemothorax after a thoracic VA",
        "critical",
        "Only after a thoracic-level VA or one whose level is unknown (lumbar, sacral and cervical levels "
        "never fire). A documented pneumothorax is its own card. A hemothorax is carried by the hemorrhage "
        "card, and desaturation, dyspnea or pleuritic pain by the embolism card, as the line 'at a thoracic "
        "level also consider pneumothorax or hemothorax — check Hb' (one card per problem). " + _AFTER,
        ("Conditions: pneumothorax, hemothorax, pleuritic pain, dyspnea", "SpO₂", "Procedure level/bodySite"),
        (
            "Assess and resuscitate",
            "POCUS / portable chest X-ray",
            "Pneumothorax: observe if small and stable; aspirate or drain if symptomatic or large (BTS 2023)",
            "Hemothorax: chest drain; CTA; embolisation or VATS for ongoing bleeding",
        ),
        r.CITE_PLEURAL,
        ("windows_days.post.pleural.suspected",),
    ),
    _doc(
        r.PAIN,
        "Increased or severe pain after VA",
        "warning",
        "Fires when the latest post-VA pain score is at least the rise points above the lowest post-VA score "
        "before it; when the latest score is at or above the severe score, more than the severe-after hours "
        "and within the severe days after the VA; or when a back-pain condition starts after the VA. "
        + _AFTER,
        ("Pain score (72514-3, 38208-5)", "Conditions: back pain", "Latest temperature and CRP"),
        (
            "MRI spine with STIR (order names the sequence and the treated level); CT spine for cement leak",
            "Lower-limb neuro exam; vital signs for embolism",
            "Differential: adjacent-level fracture, cement leak, infection, pedicle fracture, "
            "myofascial pain, "
            "transient inflammatory pain",
            "CBC and CRP; MRI with contrast when febrile or CRP raised",
        ),
        r.CITE_PAIN,
        (
            "pain_rise_points",
            "pain_severe_score",
            "pain_severe_days",
            "pain_severe_after_hours",
            "post_result_current_hours",
            "windows_days.post.pain.increased",
        ),
    ),
    _doc(
        r.FRACTURE,
        "New vertebral fracture after VA",
        "warning",
        "Fires on a vertebral fracture condition with onset after the VA; ICD-10-CM codes with a 7th "
        "character D, G, K, P or S (follow-up of an old fracture) are ignored. " + _AFTER,
        ("Conditions: vertebral fracture (terminology §5)",),
        ("Confirm with MRI (STIR)", "Optimise osteoporosis therapy", "Consider repeat VA if refractory"),
        r.CITE_FRACTURE,
        ("windows_days.post.fracture.adjacent",),
    ),
    _doc(
        r.HYPERSENSITIVITY,
        "Hypersensitivity reaction after VA",
        "critical",
        "Fires on anaphylaxis or another hypersensitivity reaction (urticaria, rash, angioedema) dated after "
        "the VA within its window. Anaphylaxis is critical within the anaphylaxis-critical hours of the "
        "reaction and a warning after; other reactions are a warning. Steps fit the time since the reaction: "
        "an acute tryptase only within the tryptase hours (NICE CG134), always a baseline tryptase at least "
        "24 h after resolution; never a step that belongs in the procedure room. " + _AFTER,
        (
            "Conditions/Observations: anaphylaxis, hypersensitivity reaction",
            "Tryptase (21582-2) after the reaction",
            "Allergies already recorded",
        ),
        (
            "Anaphylaxis protocol while acute",
            "Tryptase when still within the hours; baseline tryptase ≥ 24 h after",
            "Record the products used; allergy/immunology referral for patch testing / LTT",
            "Suggested AllergyIntolerance: unconfirmed, culprit undetermined, the recorded reaction and "
            "onset, "
            "criticality high for anaphylaxis, otherwise unable-to-assess",
        ),
        r.CITE_HYPERSENSITIVITY,
        ("tryptase_hours", "anaphylaxis_critical_hours", "windows_days.post.hypersensitivity"),
    ),
    _doc(
        r.BONE_HEALTH,
        "Osteoporosis untreated after VA",
        "warning",
        "Fires within the window after the most recent VA when no anti-resorptive or anabolic therapy is "
        "found (no active order/statement, no zoledronic acid or denosumab dose within its interval, none "
        "drafted; calcium/vitamin D alone do not count). Never with an active myeloma or skeletal metastasis "
        "on record (oncology manages bone health). Info instead of warning while a critical post-procedure "
        "card is in the same response. Silent when the medication or condition source failed. The DXA "
        "interval is the institution's choice, not the chapter's.",
        (
            "MedicationRequest / MedicationStatement (terminology §8)",
            "Conditions: myeloma, metastasis",
            "DXA",
        ),
        (
            "Calcium/vitamin D",
            "Anti-resorptive or anabolic therapy per fracture risk",
            "DXA/FRAX if none within the institutional interval",
            "Falls clinic / physiotherapy",
        ),
        r.CITE_BONE,
        (
            "zoledronic_interval_months",
            "denosumab_interval_months",
            "dxa_interval_years",
            "windows_days.post.bone-health.untreated",
        ),
    ),
    _doc(
        r.FOLLOWUP,
        "Follow-up after VA",
        "info",
        "Fires within the window after the most recent VA when no other post-procedure card fires.",
        ("Procedure (VA) date",),
        r.FOLLOWUP_STEPS,
        r.CITE_FOLLOWUP,
        ("windows_days.post.followup",),
    ),
    CHECK_FAILED_DOC,
)
