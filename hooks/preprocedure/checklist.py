"""The pre-procedure MASTER CHECKLIST: its rows, and the `pre.checklist` finding carrying the open work-up.

Rows (`checklist_rows`) are built from the findings of the same call, the work-up items (`workup.py`) and the
sources that failed. "Met by data" only when every datum the row covers was found current, was read and was
judged within limits (catalog V2.4); anything else is a problem or still to document. The row ids are the
Questionnaire's `pre.<id>` items the checklist page marks (cds_service/checklist/questionnaire.py).

The checklist finding is info, or a warning when the VA is imminent and a work-up row (INR, CBC, WBC/CRP,
spine imaging, creatinine on a DOAC) is still open; its summary counts what is open and names the worst open
item, and it carries the one set of suggestions for the open work-up (V2.5, V2.12).
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from cds_service.contracts import MEDICATION_REFS_KEY, Finding, LinkSpec
from fhir_mappings.facts import ConditionFact
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure import rules as r
from hooks.preprocedure.workup import WorkItem

Status = Literal["met", "problem", "needs-documentation"]
STATUS_LABEL: dict[str, str] = {
    "met": "✅ met by data",
    "problem": "⚠️ problem",
    "needs-documentation": "☐ needs documentation",
}
_STATE_LABEL = {
    "missing": "to obtain",
    "unreadable": "to obtain (unreadable)",
    "scheduled": "scheduled",
    "unknown": "not retrieved",
}
_MD_ESCAPED = re.compile(r"\\(.)")
_NOT_CHECKED = "a check behind this item could not complete — review it by hand"


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    id: str
    label: str
    status: Status
    rule_id: str | None  # the finding behind a problem (or that adds context to the item)
    evidence: str  # one plain-text line: why this status


def _why(f: Finding) -> str:
    """A finding's line as plain text for a row (the page escapes it; lines are Markdown-escaped)."""
    return html.unescape(_MD_ESCAPED.sub(r"\1", f.line)) if f.line else f.summary


def checklist_rows(
    c: r.RuleContext, fired: Mapping[str, Finding], failed: Collection[str], work: list[WorkItem]
) -> list[ChecklistItem]:
    """The twelve checklist rows for one call."""
    items = {w.key: w for w in work}
    rows: list[ChecklistItem] = []

    def add(item_id: str, label: str, status: Status, rule_id: str | None, why: str) -> None:
        rows.append(ChecklistItem(item_id, label, status, rule_id, why))

    def problem_from(item_id: str, label: str, *rule_ids: str) -> bool:
        rid = next((x for x in rule_ids if x in fired), None)
        if rid is not None:
            add(item_id, label, "problem", rid, _why(fired[rid]))
            return True
        if any(x in failed for x in rule_ids):
            add(item_id, label, "needs-documentation", None, _NOT_CHECKED)
            return True
        return False

    imaging = items["imaging"]

    # 1. Fracture acuity and concordance.
    label = "Fracture acuity and pain–imaging concordance (STIR oedema, focal percussion tenderness)"
    study = r.judged_imaging(c)
    if problem_from("acuity", label, r.CONCORDANCE_DISCORDANT, r.CONCORDANCE_MISSING):
        pass
    elif imaging.state != "current" or study is None:
        add("acuity", label, "needs-documentation", None, imaging.text)
    elif {"edema", "acute"} & study.findings:
        why = f"{imaging.text} reports an acute fracture/oedema; confirm focal tenderness on examination"
        add("acuity", label, "met", None, why)
    else:
        add(
            "acuity", label, "needs-documentation", None, f"{imaging.text} does not state acuity: document it"
        )

    # 2. Active infection excluded.
    label = "Active infection excluded (temperature, WBC/CRP, prior spondylitis/discitis)"
    labs = items["infection-labs"]
    raised = r.raised_infection_labs(c)
    older = [x for x in r.active_conditions(c, r.SYSTEMIC_INFECTION) if x not in _recent_systemic(c)]
    if problem_from(
        "infection", label, r.INFECTION_ACTIVE, r.INFECTION_LABS, r.INFECTION_HISTORY, r.SCREEN_MISSING
    ):
        pass
    elif raised:
        shown = " and ".join(r.lab_text(m, c.now) for m in raised)
        add("infection", label, "needs-documentation", None, f"{shown}: confirm the MRI shows no discitis")
    elif older:
        why = f"{r.names(older)} on record ({r.day(r.when_of(older[0]), c.now)}): confirm it has resolved"
        add("infection", label, "needs-documentation", None, why)
    elif labs.state != "current" or c.failed(keys.CONDITIONS, keys.TEMPERATURE):
        add("infection", label, "needs-documentation", None, f"{labs.text}; record temperature on arrival")
    else:
        why = f"{labs.text} within limits, no infection on record; record temperature on arrival"
        add("infection", label, "met", None, why)

    # 3. Neurological examination.
    label = "Neurological exam: no cord/cauda equina signs needing decompression; baseline exam and pain map"
    baseline = r.baseline_deficits(c)
    if problem_from("neuro", label, r.NEURO_RED_FLAGS, r.POSTERIOR_WALL):
        pass
    elif baseline:
        add(
            "neuro",
            label,
            "needs-documentation",
            None,
            f"baseline deficit on record ({r.names(baseline)}): document the baseline exam",
        )
    elif c.failed(keys.CONDITIONS):
        add(
            "neuro",
            label,
            "needs-documentation",
            None,
            "conditions could not be retrieved; document the exam",
        )
    else:
        add(
            "neuro",
            label,
            "needs-documentation",
            None,
            "no deficit on record; document a baseline exam and pain map",
        )

    # 4. Coagulation plan.
    label = "Coagulation plan: anticoagulants/antiplatelets reviewed, coagulopathy corrected"
    unidentified = len(c.inp.facts.unidentified_medications)
    unknown = f"{unidentified} medication(s) could not be identified — review" if unidentified else ""
    coag_rules = (
        r.LABS_OUT_OF_RANGE,
        r.COAGULOPATHY,
        r.ANTITHROMBOTIC_ACTIVE,
        r.LABS_MISSING,
        r.ORDER_WHILE_PLANNED,
    )
    coag = [items[k] for k in ("inr-day-of", "inr", "platelets") if k in items]
    not_held = [m for m in r.antithrombotic_meds(c) if r.hold_of(c, m).days == 0]
    rid = next((x for x in coag_rules if x in fired), None)
    if rid is not None:
        add("coagulation", label, "problem", rid, "; ".join(x for x in (_why(fired[rid]), unknown) if x))
    elif unknown:
        add("coagulation", label, "problem", None, unknown)
    elif any(x in failed for x in coag_rules):
        add("coagulation", label, "needs-documentation", None, _NOT_CHECKED)
    elif c.failed(keys.MEDICATION_REQUESTS, keys.MEDICATION_STATEMENTS, MEDICATION_REFS_KEY):
        add("coagulation", label, "needs-documentation", None, "medications could not be retrieved")
    elif any(i.state != "current" for i in coag):
        why = "; ".join(i.text for i in coag if i.state != "current")
        add("coagulation", label, "needs-documentation", None, why)
    elif not_held:
        why = f"{', '.join(m.ingredient for m in not_held)} on record: not withheld — note it in the plan"
        add("coagulation", label, "needs-documentation", None, why)
    else:
        why = "no antithrombotic on record; " + ", ".join(i.text for i in coag) + " within limits"
        add("coagulation", label, "met", None, why)

    # 5. Medical optimisation.
    label = "Medical optimisation: glycaemic control, cardiopulmonary assessment (prone tolerance, OSA/COPD)"
    if problem_from("optimisation", label, r.GLYCEMIC):
        pass
    elif r.SEDATION in fired:
        add("optimisation", label, "needs-documentation", r.SEDATION, _why(fired[r.SEDATION]))
    else:
        why = "no problem found; document prone tolerance, the anaesthesia plan and a room-air SpO₂"
        add("optimisation", label, "needs-documentation", None, why)

    # 6. Imaging plan.
    label = "Imaging plan: pre-procedure CT/MRI for posterior wall, endplates, clefts, venous channels"
    if imaging.state == "current":
        add("imaging", label, "met", None, f"{imaging.text} available for planning")
    elif imaging.open:
        add("imaging", label, "problem", r.CONCORDANCE_MISSING, imaging.text)
    else:
        add("imaging", label, "needs-documentation", None, imaging.text)

    # 7. Contrast allergy screen.
    label = "Contrast allergy screened; non-ionic/alternative plan ready"
    contrast = fired.get(r.ALLERGY_CONTRAST)
    if contrast is not None and contrast.indicator != "info":
        add("contrast", label, "problem", r.ALLERGY_CONTRAST, _why(contrast))
    elif contrast is not None:
        add("contrast", label, "needs-documentation", r.ALLERGY_CONTRAST, _why(contrast))
    elif c.failed(keys.ALLERGIES):
        add("contrast", label, "needs-documentation", None, "allergy list could not be retrieved")
    else:
        add(
            "contrast",
            label,
            "needs-documentation",
            None,
            "no contrast allergy recorded; confirm with the patient",
        )

    # 8–12. Plans the record cannot show.
    plan = "procedural plan — document before the procedure"
    add(
        "access",
        "Access plan: uni- vs bipedicular, midline crossing, bailout if distribution is poor",
        "needs-documentation",
        None,
        plan,
    )
    label = "Cement plan: high-viscosity PMMA, expected volume, stop-rules declared to the team"
    if not problem_from("cement", label, r.ALLERGY_CEMENT):
        add("cement", label, "needs-documentation", None, plan)
    add(
        "radiation",
        "Radiation plan: pulse rate, collimation, C-arm geometry, shielding, last-image hold",
        "needs-documentation",
        None,
        plan,
    )
    risk = fired.get(r.RISK_FACTORS)
    add(
        "prophylaxis",
        "Prophylaxis: antibiotics per policy; DVT prophylaxis if indicated",
        "needs-documentation",
        r.RISK_FACTORS if risk else None,
        _why(risk) if risk else "document the prophylaxis given",
    )
    add(
        "consent",
        "Consent covers cement leakage/embolism, neural injury, infection, adjacent-level fracture",
        "needs-documentation",
        None,
        "document the consent discussion",
    )
    return rows


def _recent_systemic(c: r.RuleContext) -> list[ConditionFact]:
    window = c.days("systemic_infection_days")
    return [x for x in r.active_conditions(c, r.SYSTEMIC_INFECTION) if r.recent(c, x, window)]


def _cell(text: str) -> str:
    # Our own words and values (record text is escaped where it enters): only a pipe needs care.
    return " ".join(text.split()).replace("|", "\\|")


def checklist_finding(c: r.RuleContext, rows: list[ChecklistItem], work: list[WorkItem]) -> Finding:
    """`pre.checklist`: what is open, the worst open item when imminent, one set of suggestions."""
    open_items = [w for w in work if w.open]
    scheduled = [w for w in work if w.state == "scheduled"]
    to_document = sum(1 for row in rows if row.status == "needs-documentation")
    escalating = [w for w in open_items if w.escalates]
    imminent = c.anchor.imminent and bool(escalating)
    names = ", ".join(dict.fromkeys(w.name for w in open_items))
    if imminent:
        more = len(open_items) - 1
        summary = f"{r.va_when(c)}: {escalating[0].name} not done" + (
            f" ({more} more to obtain)" if more else ""
        )
    else:
        parts = []
        if open_items:
            before = f" before {r.day(c.anchor.start, c.now)}" if c.anchor.start else ""
            parts.append(f"{len(open_items)} to obtain{before} ({names})")
        if scheduled:
            parts.append(f"{len(scheduled)} scheduled")
        parts.append(f"{to_document} to document")
        summary = "VA checklist: " + ", ".join(parts)
    shown = [w for w in work if w.state != "current"]
    table = "\n".join(f"| {_cell(w.name)} | {_STATE_LABEL[w.state]} | {_cell(w.text)} |" for w in shown)
    wanted = [o for w in open_items for o in w.orders]
    return r.finding(
        c,
        r.CHECKLIST,
        "warning" if imminent else "info",
        summary,
        ("| Work-up | Status | Detail |\n|---|---|---|\n" + table + "\n") if table else "",
        f"{to_document} items to document; the full checklist is on the checklist page.",
        evidence=[e for w in open_items for e in w.evidence],
        orders=dict.fromkeys(wanted),
        why="Pre-procedure work-up for vertebral augmentation",
        stat=imminent,
        repeat=True,  # only open items order anything: their test has no current readable result
        policy=(
            "imminent_hours",
            "coag_lab_window_days",
            "infection_lab_window_days",
            "imaging_window_weeks",
        ),
        links=(
            LinkSpec(label="Pre-procedure checklist: what each item means", url="/docs/rules/pre.checklist"),
        ),
    )
