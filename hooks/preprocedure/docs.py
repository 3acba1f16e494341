"""Rule documentation of va-preprocedure: one `RuleDoc` per rule id, rendered at `/docs/rules/<id>`."""

from __future__ import annotations

from cds_service.contracts import RuleDoc
from hooks.common import CHECK_FAILED_DOC, DATA_UNAVAILABLE
from hooks.preprocedure import rules as r

ALL_HOOKS = ("order-select", "order-sign", "patient-view")

RULE_DOCS: tuple[RuleDoc, ...] = (
    RuleDoc(
        r.ANTITHROMBOTIC_ACTIVE,
        "Active anticoagulant or antiplatelet before vertebral augmentation",
        "warning",
        "Fires when the record holds an active anticoagulant or antiplatelet (MedicationRequest "
        "active/on-hold, "
        "MedicationStatement active/intended; any aspirin-containing product; catheter flush/lock solutions "
        "excluded). Draft orders are handled by pre.antithrombotic-order-while-va-planned instead.",
        (
            "MedicationRequest / MedicationStatement matched to an antithrombotic ingredient",
            "Creatinine clearance (LOINC 35591-7), else Cockcroft–Gault from creatinine (2160-0), weight "
            "(29463-7), age and sex, else eGFR (98979-8 …) with a caveat",
            "The planned VA date (draft order, active ServiceRequest or booked Appointment)",
        ),
        (
            "List each agent with its class and last ordered/recorded date",
            "Give the policy hold period for a high bleeding-risk procedure; renal rows by creatinine "
            "clearance, "
            "the longer hold when renal function is unknown or only eGFR is known",
            "Give the latest safe last-dose time for the planned VA date",
            "Suggest INR and CBC when missing from the policy window",
        ),
        r.CITE_COAG,
        ("antithrombotic_holds", "renal_window_days", "weight_window_days", "coag_lab_window_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.LABS_OUT_OF_RANGE,
        "INR or platelet count outside the limits for a high bleeding-risk procedure",
        "critical",
        "Judges only the latest INR and platelet count inside their windows (INR 2 days on warfarin, else 30 "
        "days; platelets 30 days). Strict thresholds: INR above the maximum fires, equal does not; platelets "
        "below the minimum fire, equal do not.",
        ("INR (LOINC 6301-6, 34714-6, 46418-0, 38875-1)", "Platelets (LOINC 777-3, 26515-7, 778-1)"),
        ("Do not proceed; correct per institutional policy", "Suggest repeat INR / CBC after correction"),
        r.CITE_COAG,
        ("inr_max", "platelets_min", "coag_lab_window_days", "inr_window_on_warfarin_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.LABS_MISSING,
        "INR or platelet count missing before vertebral augmentation",
        "warning",
        "Fires when there is no INR (2 days on warfarin, else 30 days) or no platelet count (30 days). "
        "Does not "
        "fire when the laboratory source failed: then sys.data-unavailable names the check instead.",
        ("INR and platelet Observations", "Active warfarin (chooses the INR window)"),
        ("Say which result is missing; older results are shown for context only", "Suggest INR and CBC"),
        r.CITE_COAG,
        ("coag_lab_window_days", "inr_window_on_warfarin_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.INFECTION_ACTIVE,
        "Possible active infection",
        "critical",
        "Fires on a temperature at or above the fever threshold within the fever window, an active spinal or "
        "systemic infection diagnosis (discitis, vertebral osteomyelitis, epidural/paravertebral abscess, "
        "spondylitis, sepsis/bacteraemia), or a positive blood culture (LOINC 600-7 naming an organism or "
        "flagged positive) within the culture window.",
        ("Body temperature (8310-5, 8331-1)", "Conditions (active only)", "Blood cultures (600-7)"),
        ("Defer VA until infection is excluded or treated", "Suggest CBC, CRP, ESR, blood cultures"),
        r.CITE_INFECTION,
        ("fever_celsius", "fever_window_hours", "blood_culture_window_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.INFECTION_HISTORY,
        "Prior spinal infection",
        "warning",
        "Fires on a resolved/inactive spondylitis, discitis, vertebral osteomyelitis or epidural abscess.",
        ("Conditions of any clinical status",),
        ("Check for recurrence", "Consider MRI spine with contrast (suggested)"),
        r.CITE_INFECTION,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.SCREEN_MISSING,
        "Infection screen incomplete",
        "warning",
        "Fires when no temperature was recorded within the fever window, or when neither a WBC nor a "
        "CRP exists "
        "within the infection-lab window. A failed source is reported by sys.data-unavailable instead.",
        ("Body temperature", "WBC (6690-2, 26464-8)", "CRP (1988-5, 30522-7)"),
        ("Say what is missing", "Suggest CBC and CRP"),
        r.CITE_INFECTION,
        ("fever_window_hours", "infection_lab_window_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.RISK_FACTORS,
        "Infection risk factors",
        "info",
        "Fires on active diabetes or immunosuppression (condition or an active immunosuppressant).",
        ("Conditions", "Immunosuppressant medications"),
        ("Antibiotic prophylaxis per institutional policy", "Glycaemic optimisation in diabetes"),
        r.CITE_RISK,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.CONCORDANCE_MISSING,
        "No recent spine imaging to confirm fracture acuity",
        "warning",
        "Fires when no spine MRI (or CT / bone scan) exists within the imaging window. Not fired when the "
        "imaging source failed.",
        ("DiagnosticReport of spine MRI/CT (LOINC 24968-0, 24980-5, 36067-7, 36400-0, 36530-4 …)",),
        (
            "Confirm acuity and pain–imaging concordance: STIR / T2 fat-sat oedema at the target level, "
            "focal "
            "percussion tenderness",
            "Suggest MRI spine with STIR",
        ),
        r.CITE_INDICATION,
        ("imaging_window_weeks",),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.CONCORDANCE_DISCORDANT,
        "Imaging does not support augmentation at the ordered level",
        "warning",
        "Judges the latest spine MRI in the window (else the latest CT/bone scan): fires when it reports no "
        "marrow oedema, a chronic/healed fracture without an acute one, or levels that do not include the "
        "level of the VA order.",
        ("Spine imaging conclusion (findings, levels)", "VA order level (bodySite)"),
        ("Reconsider the indication", "Document the concordance if the VA goes ahead"),
        r.CITE_INDICATION,
        ("imaging_window_weeks",),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.NEURO_RED_FLAGS,
        "Neurological red flags: decompression may be needed",
        "critical",
        "Fires on an active cord compression, cauda equina syndrome, myelopathy, new motor deficit, "
        "retropulsion, "
        "posterior wall compromise or canal stenosis.",
        ("Conditions (active)",),
        ("Decompression may be needed rather than augmentation", "Suggest spine surgery referral"),
        r.CITE_NEURO,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.ALLERGY_CONTRAST,
        "Contrast allergy",
        "warning",
        "Fires on an active allergy/intolerance to iodinated contrast, or a class-level contrast entry (then "
        "worded as 'check with the patient').",
        ("AllergyIntolerance (SNOMED 426722004, 385420005 …)",),
        ("Non-ionic or alternative contrast plan", "Premedication per institutional policy"),
        r.CITE_CONTRAST,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.ALLERGY_CEMENT,
        "Bone cement (PMMA) component allergy",
        "critical",
        "Fires on an active allergy to PMMA / methyl methacrylate / bone cement, benzoyl peroxide or "
        "N,N-dimethyl-p-toluidine, or a recorded prior implant/cement reaction.",
        ("AllergyIntolerance (codes and text)", "Conditions recording an implant/cement reaction"),
        (
            "Dermatology / allergy-immunology input and patch testing before VA",
            "Consider alternative materials or a non-cement strategy",
            "Suggest allergy, dermatology and immunology referrals",
        ),
        r.CITE_CEMENT,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.SEDATION,
        "Cardiopulmonary disease and sedation",
        "warning",
        "Fires on active COPD, obstructive sleep apnoea, heart failure or other severe cardiopulmonary "
        "disease.",
        ("Conditions (active)",),
        (
            "Local anaesthesia with light sedation",
            "Consider an erector spinae plane block",
            "Assess prone tolerance; general anaesthesia only for selected cases",
        ),
        r.CITE_SEDATION,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.GLYCEMIC,
        "Poor glycaemic control before elective VA",
        "warning",
        "Fires in active diabetes when the latest HbA1c or glucose within the glycaemic window is above the "
        "policy limit (strictly greater).",
        ("Diabetes condition", "HbA1c (4548-4 …)", "Glucose (2345-7 …)"),
        ("Optimise glycaemic control before an elective procedure",),
        r.CITE_GLYCEMIC,
        ("hba1c_max_percent", "glucose_max_mg_dl", "glycemic_window_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.CHECKLIST,
        "Pre-procedure master checklist",
        "info",
        "Always shown when a VA is being ordered or (patient-view) is planned — not on the "
        "antithrombotic-order "
        "path. Each item is marked met by data, problem (naming the rule that fired) or needs documentation.",
        ("The outcome of every other pre-procedure rule", "Which FHIR sources could not be retrieved"),
        (
            "Acuity/concordance",
            "Infection excluded",
            "Neurological exam",
            "Coagulation plan",
            "Medical optimisation",
            "Imaging plan",
            "Contrast allergy screen",
            "Access plan",
            "Cement plan",
            "Radiation plan",
            "Prophylaxis",
            "Consent content: leakage/embolism, neural injury, infection, adjacent-level fracture",
        ),
        "Chapter MASTER CHECKLIST 'Pre-procedure'; §2.1 Checklist — Pre-procedure safety",
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.ORDER_WHILE_PLANNED,
        "Antithrombotic ordered while a VA is planned inside its hold period",
        "warning",
        "On order-select/order-sign of an anticoagulant or antiplatelet: fires when a VA (active "
        "ServiceRequest, "
        "booked Appointment, or a VA drafted alongside) starts before now + the drug's hold period "
        "(days × 24 h, "
        "boundary inclusive), or has no date set. Hold periods use creatinine clearance; unknown renal "
        "function "
        "or eGFR only → the longer hold. An agent without a policy hold period always fires.",
        ("Draft MedicationRequest", "Planned VA date", "Renal function (as for antithrombotic-active)"),
        ("Show the planned date and the hold period", "Coordinate with the proceduralist"),
        r.CITE_COAG,
        ("antithrombotic_holds", "renal_window_days", "weight_window_days"),
        ("order-select", "order-sign"),
    ),
    RuleDoc(
        DATA_UNAVAILABLE,
        "Some checks could not run",
        "warning",
        "Fires when a prefetch key was an OperationOutcome or the FHIR fetch failed or timed out. The "
        "rules fed "
        "by that source stay silent (their *-missing variants do not fire: the data is unknown, not missing) "
        "and this card names them.",
        ("Which prefetch keys failed",),
        ("Review those items in the chart manually or retry",),
        "va-cds rule catalog, system rule sys.data-unavailable",
        (),
        ALL_HOOKS,
    ),
    CHECK_FAILED_DOC,
)
