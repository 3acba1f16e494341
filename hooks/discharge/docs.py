"""Rule documentation of va-discharge: one `RuleDoc` per rule id (`/docs/rules/<id>`)."""

from __future__ import annotations

from cds_service.contracts import RuleDoc
from hooks.common import CHECK_FAILED_DOC
from hooks.discharge import rules as r

HOOKS = ("encounter-discharge",)

RULE_DOCS: tuple[RuleDoc, ...] = (
    RuleDoc(
        r.NEURO_EXAM_MISSING,
        "Neurological exam missing after VA",
        "warning",
        "Fires when no neurological examination (Procedure or Observation, by code or text) is dated from "
        "the "
        "end of the VA to now. Silent when the procedure or exam-observation source failed (then "
        "sys.data-unavailable names the check).",
        ("Procedure / Observation: neurological examination after the VA's end",),
        (
            "Examine motor, sensory, saddle and sphincter function",
            "Compare with baseline",
            "New deficit → urgent imaging and spine surgery",
        ),
        r.CITE_NEURO,
        (),
        HOOKS,
    ),
    RuleDoc(
        r.RED_FLAGS,
        "Discharge red flags",
        "info",
        "Always when the service applies.",
        ("Procedure (VA) in the discharged encounter or within the recent-VA days",),
        r.RED_FLAG_LINES,
        r.CITE_RED_FLAGS,
        ("discharge_recent_va_days",),
        HOOKS,
    ),
    RuleDoc(
        r.DOCUMENTATION,
        "Procedure documentation incomplete",
        "info",
        "Fires when the VA Procedure lacks its level, approach, cement details or complications.",
        ("Procedure.bodySite, code text, note, usedCode/usedReference, complication",),
        ("Record level(s), approach, cement brand/lot/volume, viscosity, complications, DAP/fluoro time",),
        r.CITE_DOCUMENTATION,
        (),
        HOOKS,
    ),
    RuleDoc(
        r.BONE_HEALTH,
        "No bone-health plan at discharge",
        "warning",
        "Fires when no anti-resorptive or anabolic therapy is active (or an injectable within its interval) "
        "and none is drafted. Never with an active myeloma or skeletal metastasis on record (oncology "
        "manages "
        "bone health). Silent when the medication or condition source failed. The DXA interval is the "
        "institution's choice, not the chapter's.",
        ("MedicationRequest / MedicationStatement / draft orders (terminology §8)", "Conditions", "DXA"),
        (
            "Calcium/vitamin D",
            "Therapy per fracture risk",
            "DXA/FRAX if none within the institutional interval",
            "Falls clinic",
        ),
        r.CITE_BONE,
        ("zoledronic_interval_months", "denosumab_interval_months", "dxa_interval_years"),
        HOOKS,
    ),
    RuleDoc(
        r.FOLLOWUP,
        "Follow-up timing at discharge",
        "info",
        "Always when the service applies.",
        ("Procedure (VA)",),
        r.FOLLOWUP_LINES,
        r.CITE_FOLLOWUP,
        (),
        HOOKS,
    ),
    CHECK_FAILED_DOC,
)
