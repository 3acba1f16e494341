"""Rule documentation of the pre-procedure services (catalog v2): one `RuleDoc` per rule id, at
`/docs/rules/<id>`. The pages keep what cards no longer show: thresholds, windows and how loud each rule is.
"""

from __future__ import annotations

from cds_service.contracts import RuleDoc
from hooks.common import CHECK_FAILED_DOC, DATA_UNAVAILABLE
from hooks.preprocedure import rules as r

ALL_HOOKS = ("order-select", "order-sign", "patient-view")
ORDER_HOOKS = ("order-select", "order-sign")
_ANCHOR = (
    "Windows are measured to the planned procedure start (the draft order's date, else the booked "
    "appointment, else the planned order; now when no date is known)."
)
_FOLDED = "Folded: an item of the pre.checklist card, never a card of its own."

RULE_DOCS: tuple[RuleDoc, ...] = (
    RuleDoc(
        r.ANTITHROMBOTIC_ACTIVE,
        "Active anticoagulant or antiplatelet before vertebral augmentation",
        "warning",
        "Card (warning) when the record holds an active systemic anticoagulant or antiplatelet (catheter "
        "flush/lock and topical, eye, ear and nasal products excluded). Shows each drug with its hold "
        "against "
        "the planned date ('last dose on or before 28 Nov'); when the date leaves less than the hold it asks "
        "to "
        "confirm the last dose or reschedule, never giving a past date as an instruction. Drugs that are not "
        "withheld (cilostazol) are a checklist note. Adds a thrombotic-risk line for two antiplatelets, or "
        "an "
        "anticoagulant with a recent VTE, a mechanical valve or a recent coronary stent; notes that INR does "
        "not "
        "measure DOAC effect; an INR explained by warfarin (≤ 3.5, VA not imminent) folds in with 'recheck "
        "within 2 days before the VA'. A medication last ordered more than 12 months ago says 'confirm it is "
        "still taken'.",
        (
            "MedicationRequest / MedicationStatement matched to an antithrombotic ingredient, dose and dose "
            "form",
            "Creatinine clearance (LOINC 35591-7), else Cockcroft–Gault from creatinine (2160-0), weight "
            "(29463-7), age and sex; eGFR alone means the longer hold",
            "The planned VA date",
        ),
        (
            "Agree the hold, bridging and restart with the prescriber and the proceduralist",
            "Prophylactic LMWH (enoxaparin ≤ 40 mg/day, dalteparin ≤ 5,000 IU/day) holds 12 h; otherwise "
            "the therapeutic hold",
        ),
        r.CITE_COAG,
        (
            "antithrombotic_holds",
            "renal_window_days",
            "weight_window_days",
            "stale_medication_months",
            "lmwh_prophylactic_enoxaparin_mg_day",
            "lmwh_prophylactic_dalteparin_iu_day",
            "lmwh_prophylactic_hold_hours",
        ),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.LABS_OUT_OF_RANGE,
        "INR or platelet count outside the limits for a high bleeding-risk procedure",
        "critical",
        "Judges the latest readable INR and platelet count inside the 30-day window to the planned date. "
        "Critical only when the VA is imminent (within 48 h, dated in the past, or an undated "
        "urgent/inpatient "
        "order); otherwise a warning. An INR up to 3.5 on an active, recent vitamin K antagonist is expected "
        "and folds into the antithrombotic card; above 3.5 it is 'supratherapeutic: involve the "
        "anticoagulation team'. An INR on a DOAC alone is not judged. With chronic liver disease the limits "
        "are "
        "INR 2.5 and platelets 30 ×10⁹/L, and a coagulopathy finding folds into this card. Reversal is never "
        "suggested for an elective VA. " + _ANCHOR,
        ("INR (LOINC 6301-6, 34714-6, 46418-0, 38875-1)", "Platelets (LOINC 777-3, 26515-7, 778-1)"),
        (
            "Imminent: correct per policy and recheck (repeat INR/CBC suggested, stat)",
            "Otherwise: plan and recheck",
        ),
        r.CITE_COAG,
        (
            "inr_max",
            "platelets_min",
            "inr_max_liver",
            "platelets_min_liver",
            "inr_max_explained_vka",
            "coag_lab_window_days",
            "imminent_hours",
        ),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.LABS_MISSING,
        "INR or platelet count to obtain before vertebral augmentation",
        "info",
        _FOLDED + " Fires when the INR or platelet count has no current result (30 days to the planned date) "
        "or its latest result could not be read; when the planned date is further away than the window the "
        "item is 'scheduled', not missing. On warfarin the INR within 2 days is a row when the VA is "
        "imminent. "
        "Makes the checklist a warning when the VA is imminent. Not fired when the lab source failed "
        "(sys.data-unavailable names it).",
        ("INR and platelet Observations (status final/amended/corrected/preliminary)",),
        ("Order INR / CBC from the checklist card",),
        r.CITE_COAG,
        ("coag_lab_window_days", "inr_window_on_warfarin_days", "imminent_hours"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.COAGULOPATHY,
        "Bleeding disorder, thrombocytopenia or chronic liver disease",
        "warning",
        "Card (warning) for an active bleeding disorder (e.g. von Willebrand disease), coagulopathy, "
        "thrombocytopenia or chronic liver disease / cirrhosis: a haematology or hepatology plan before the "
        "VA. Folds into pre.coag.labs-out-of-range when that fires.",
        ("Conditions (active)",),
        ("Agree the correction plan with haematology/hepatology",),
        r.CITE_COAG,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.INFECTION_ACTIVE,
        "Possible active infection",
        "critical",
        "Critical for a temperature ≥ 38.0 °C in the 72 h before now, a positive blood culture within 14 "
        "days "
        "(naming an organism or flagged positive; never 'pending', 'in progress' or 'no growth'), or an "
        "active "
        "spinal infection; a systemic infection (sepsis, bacteraemia, pneumonia, urinary, skin/soft-tissue, "
        "wound, abscess) with onset — or recordedDate — within 30 days is critical when the VA is imminent "
        "and "
        "a warning otherwise. Older or undated systemic infections are a checklist row. Carries "
        "pre.infection.history and pre.infection.labs-abnormal when they fire too.",
        ("Body temperature (8310-5, 8331-1)", "Conditions", "Blood cultures (600-7)"),
        (
            "Defer the VA until infection is excluded or treated",
            "CBC, CRP, ESR (blood cultures when febrile or a culture was positive); stat when critical",
            "Suspected spinal infection: image-guided aspiration before antibiotics when stable",
        ),
        r.CITE_INFECTION,
        ("fever_celsius", "fever_window_hours", "blood_culture_window_days", "systemic_infection_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.INFECTION_LABS,
        "Raised WBC or CRP before vertebral augmentation",
        "warning",
        "Card (warning) when the latest current CRP is ≥ 50 mg/L or WBC > 12 ×10⁹/L, or any CRP > 10 / WBC > "
        "11 "
        "with diabetes, immunosuppression or a prior spinal infection. A lower raised value is a checklist "
        "row "
        "('CRP 18 mg/L: confirm the MRI shows no discitis'): CRP is often raised after a recent fracture. "
        "Folds "
        "into pre.infection.active when that fires.",
        (
            "WBC (6690-2, 26464-8)",
            "CRP (1988-5, 30522-7)",
            "Diabetes / immunosuppression / prior spinal infection",
        ),
        ("Look for a source; ESR and MRI with contrast suggested",),
        r.CITE_INFECTION,
        ("wbc_max", "crp_max_mg_l", "pre_crp_card_mg_l", "pre_wbc_card", "infection_lab_window_days"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.INFECTION_HISTORY,
        "Prior spinal infection",
        "warning",
        "Card (warning) for a spinal infection that is inactive, resolved, in remission or has an abatement. "
        "Folds into pre.infection.active when that fires.",
        ("Conditions of any clinical status",),
        ("Check for recurrence", "Consider MRI spine with contrast (suggested)"),
        r.CITE_INFECTION,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.SCREEN_MISSING,
        "Infection screen to obtain",
        "info",
        _FOLDED
        + " Fires when neither a WBC nor a CRP is current (30 days to the planned date) or the latest "
        "cannot be read. Temperature is never missing data: the checklist asks to record it on arrival.",
        ("WBC (6690-2, 26464-8)", "CRP (1988-5, 30522-7)"),
        ("Order CBC and CRP from the checklist card",),
        r.CITE_INFECTION,
        ("infection_lab_window_days",),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.RISK_FACTORS,
        "Infection risk factors",
        "info",
        _FOLDED + " Active diabetes or immunosuppression (condition or an active immunosuppressant).",
        ("Conditions", "Immunosuppressant medications"),
        ("Antibiotic prophylaxis per institutional policy",),
        r.CITE_RISK,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.CONCORDANCE_MISSING,
        "No current spine imaging to confirm fracture acuity",
        "info",
        _FOLDED + " Fires when no spine MRI, CT or bone scan falls within 12 weeks of the planned date. Not "
        "fired when the imaging source failed.",
        ("DiagnosticReport of spine MRI/CT (LOINC 24968-0, 24980-5, 36067-7, 36400-0, 36530-4 …)",),
        ("MRI spine with STIR from the checklist card; CT or bone scan when MRI is contraindicated",),
        r.CITE_INDICATION,
        ("imaging_window_weeks",),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.CONCORDANCE_DISCORDANT,
        "Imaging may not support augmentation at this level",
        "warning",
        "Card (warning) when the latest current spine MRI (else CT/bone scan) reports no marrow oedema, a "
        "chronic/healed fracture, or levels that do not include the ordered level.",
        ("Spine imaging conclusion", "The draft order's level"),
        ("Reconsider the indication or document concordance",),
        r.CITE_INDICATION,
        ("imaging_window_weeks",),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.NEURO_RED_FLAGS,
        "New neurological deficit before vertebral augmentation",
        "critical",
        "Card (critical) for a spinal-pattern deficit (cord compression, cauda equina syndrome, myelopathy, "
        "lower-limb motor deficit) that is new: onset — or recordedDate — within 90 days before now, or "
        "undated and not chronic. Never for chronic, old or sequela-coded deficits, hemiplegia or stroke "
        "sequelae, or spinal stenosis alone: those are the checklist's neuro row ('baseline deficit on "
        "record: document the baseline exam'). Carries pre.indication.posterior-wall when both fire.",
        ("Conditions (active) with onset/recordedDate",),
        ("Examine and document", "Spine surgery opinion before any VA (referral suggested, stat)"),
        r.CITE_NEURO,
        ("neuro_new_days",),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.POSTERIOR_WALL,
        "Posterior wall involvement or retropulsion",
        "warning",
        "Card (warning) when a current imaging conclusion or an active condition documents retropulsion, a "
        "posterior wall fracture or canal compromise. Folds into pre.indication.neuro-red-flags when that "
        "fires.",
        ("Spine imaging conclusions", "Conditions"),
        (
            "Assess canal compromise on CT (suggested unless a current CT exists)",
            "Surgical opinion if compromised",
        ),
        r.CITE_NEURO,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.ALLERGY_CONTRAST,
        "Contrast allergy",
        "warning",
        "Card (warning) for an allergy to iodinated contrast media (also 'contrast dye' or a named agent). "
        "Class-level entries — iodine, shellfish, seafood — are a checklist item: 'not a contrast allergy; "
        "ask'.",
        ("AllergyIntolerance (active)",),
        ("Non-ionic/alternative contrast or none; premedication per policy",),
        r.CITE_CONTRAST,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.ALLERGY_CEMENT,
        "Bone cement component allergy or prior implant reaction",
        "critical",
        "Card (critical) for an allergy to PMMA / methyl methacrylate / bone cement, benzoyl peroxide or "
        "N,N-dimethyl-p-toluidine, or a recorded reaction to an implant or cement.",
        ("AllergyIntolerance", "Conditions (reaction text)"),
        ("Allergy input with patch testing before VA (referral suggested)", "Consider other materials"),
        r.CITE_CEMENT,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.SEDATION,
        "Cardiopulmonary disease and sedation",
        "info",
        _FOLDED + " COPD, sleep apnoea, heart failure or other severe cardiopulmonary disease: plan local "
        "anaesthesia with light sedation, check prone tolerance and record a baseline room-air SpO₂.",
        ("Conditions (active)",),
        ("Light sedation, erector spinae plane block to spare opioids; GA for selected cases",),
        r.CITE_SEDATION,
        (),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.GLYCEMIC,
        "Poor glycaemic control before elective VA",
        "warning",
        "Card (warning) in active diabetes when the latest readable HbA1c or glucose within 90 days of the "
        "planned date is above the policy limit.",
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
        "Shown when a VA is being ordered or (patient-view) is planned — not on the antithrombotic-order "
        "path. "
        "Info, or a warning when the VA is imminent and a work-up row (INR, platelets/CBC, WBC/CRP, spine "
        "imaging, creatinine/CrCl on a DOAC) is open; the summary counts what is open ('VA checklist: 3 to "
        "obtain before 3 Dec (INR, CBC, spine MRI), 8 to document') or names the worst open item ('VA "
        "tomorrow: INR on warfarin not done'). It carries the folded findings and one set of suggestions. "
        "A row is met by data only when every datum it covers was current, readable and within limits; "
        "medications that could not be identified keep the coagulation row open. " + _ANCHOR,
        (
            "The findings of every other pre-procedure rule",
            "Work-up results and their dates",
            "Failed sources",
        ),
        (
            "Acuity/concordance",
            "Infection excluded (temperature recorded on arrival)",
            "Neurological exam (baseline deficits named)",
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
        r.CITE_CHECKLIST,
        ("imminent_hours", "coag_lab_window_days", "infection_lab_window_days", "imaging_window_weeks"),
        ALL_HOOKS,
    ),
    RuleDoc(
        r.ORDER_WHILE_PLANNED,
        "Antithrombotic ordered while a VA is planned inside its hold period",
        "warning",
        "On order-select/order-sign of an anticoagulant or antiplatelet while a VA is planned: fires when "
        "the "
        "VA starts before now + the drug's hold period (boundary inclusive) or has no date. On this path "
        "only "
        "this rule and the system rules run. Hold periods use creatinine clearance; unknown renal function "
        "or "
        "eGFR only → the longer hold.",
        ("Draft MedicationRequest", "Planned VA date", "Renal function"),
        ("Show the planned date and the hold", "Coordinate with the proceduralist"),
        r.CITE_COAG,
        ("antithrombotic_holds", "renal_window_days", "weight_window_days"),
        ORDER_HOOKS,
    ),
    RuleDoc(
        r.PATIENT_DECEASED,
        "The record says this patient died",
        "info",
        "When the Patient resource is deceased (deceasedBoolean true or a deceasedDateTime not after now) no "
        "safety checks run and no cards are shown, except on the order hooks one info card asking to check "
        "the "
        "patient's identity.",
        ("Patient.deceased[x]",),
        ("Check that the right chart is open",),
        r.CITE_DECEASED,
        (),
        ORDER_HOOKS,
    ),
    RuleDoc(
        DATA_UNAVAILABLE,
        "Some checks could not run",
        "warning",
        "Fires when a prefetch key was an OperationOutcome or the FHIR fetch failed or timed out. The rules "
        "fed "
        "by that source stay silent (their work-up items are 'not retrieved', not missing) and this card "
        "names "
        "them.",
        ("Which prefetch keys failed",),
        ("Review those items in the chart manually or retry",),
        "va-cds rule catalog, system rule sys.data-unavailable",
        (),
        ALL_HOOKS,
    ),
    CHECK_FAILED_DOC,
)
