"""The pre-procedure MASTER CHECKLIST as data: each item met by data, a problem, or still to document.

`checklist_items` derives every status from which rules fired and which sources failed, so it needs no
policy of its own: an item is "met" only when the rules that check it ran on available data and stayed
silent (a `*-missing` rule firing makes it a problem, a failed source makes it "needs-documentation").
The later checklist web page reuses this function with the fired rule ids of a call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cds_service.contracts import CardSpec, HookInput, LinkSpec
from hooks.common import fmt_date
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure import rules as r

Status = Literal["met", "problem", "needs-documentation"]
STATUS_LABEL: dict[str, str] = {
    "met": "✅ met by data",
    "problem": "⚠️ problem",
    "needs-documentation": "☐ needs documentation",
}


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    id: str
    label: str
    status: Status
    rule_id: str | None  # the rule that fired for a problem (or that adds context to the item)
    evidence: str  # one plain-text line: why this status


def _first(fired: set[str], *rule_ids: str) -> str | None:
    return next((rid for rid in rule_ids if rid in fired), None)


def _problem(item_id: str, label: str, rule_id: str, why: str) -> ChecklistItem:
    return ChecklistItem(item_id, label, "problem", rule_id, f"{why} (see {rule_id})")


def checklist_items(inp: HookInput, fired_rule_ids: Iterable[str]) -> list[ChecklistItem]:
    """The pre-procedure checklist for one patient, given the rule ids that fired on the same input."""
    fired = set(fired_rule_ids)
    failed = inp.unavailable
    facts = inp.facts
    items: list[ChecklistItem] = []

    # 1. Fracture acuity and pain–imaging concordance.
    label = "Fracture acuity and pain–imaging concordance (STIR oedema, focal percussion tenderness)"
    rid = _first(fired, r.CONCORDANCE_MISSING, r.CONCORDANCE_DISCORDANT)
    studies = r.spine_studies(facts.imaging)
    latest = studies[0] if studies else None
    if rid:
        items.append(_problem("acuity", label, rid, "recent imaging missing or not concordant"))
    elif keys.IMAGING in failed:
        items.append(
            ChecklistItem("acuity", label, "needs-documentation", None, "imaging could not be retrieved")
        )
    elif latest is not None and {"edema", "acute"} & latest.findings:
        items.append(
            ChecklistItem(
                "acuity",
                label,
                "met",
                None,
                f"{latest.modality.upper()} {fmt_date(latest.time)} reports an acute fracture/oedema; "
                "confirm focal tenderness on examination",
            )
        )
    else:
        items.append(
            ChecklistItem(
                "acuity",
                label,
                "needs-documentation",
                None,
                "recent imaging on file but acuity/oedema at the target level not stated — document "
                "concordance",
            )
        )

    # 2. Active infection excluded.
    label = "Active infection excluded (temperature, WBC/CRP, prior spondylitis/discitis)"
    rid = _first(fired, r.INFECTION_ACTIVE, r.SCREEN_MISSING, r.INFECTION_HISTORY)
    if rid:
        items.append(
            _problem("infection", label, rid, "infection suspected, screen incomplete or prior infection")
        )
    elif failed & {keys.TEMPERATURE, keys.INFECTION_LABS, keys.CONDITIONS}:
        items.append(
            ChecklistItem(
                "infection", label, "needs-documentation", None, "some infection data could not be retrieved"
            )
        )
    else:
        items.append(
            ChecklistItem(
                "infection",
                label,
                "met",
                None,
                "recent temperature without fever, WBC/CRP on file, no active or past spinal infection "
                "recorded",
            )
        )

    # 3. Neurological examination.
    label = "Neurological exam: no cord/cauda equina signs needing decompression; baseline exam and pain map"
    if r.NEURO_RED_FLAGS in fired:
        items.append(_problem("neuro", label, r.NEURO_RED_FLAGS, "neurological red flag on record"))
    else:
        items.append(
            ChecklistItem(
                "neuro",
                label,
                "needs-documentation",
                None,
                "no red flag recorded; document a baseline neurological exam and pain map",
            )
        )

    # 4. Coagulation plan.
    label = "Coagulation plan: anticoagulants/antiplatelets reviewed, coagulopathy corrected"
    rid = _first(fired, r.LABS_OUT_OF_RANGE, r.LABS_MISSING, r.ORDER_WHILE_PLANNED, r.ANTITHROMBOTIC_ACTIVE)
    if rid:
        items.append(_problem("coagulation", label, rid, "coagulation issue to resolve or document"))
    elif failed & {keys.COAG_LABS, keys.MEDICATION_REQUESTS, keys.MEDICATION_STATEMENTS}:
        items.append(
            ChecklistItem(
                "coagulation",
                label,
                "needs-documentation",
                None,
                "medication or coagulation data unavailable",
            )
        )
    else:
        inr, plt = facts.latest("inr"), facts.latest("platelets")
        values = ", ".join(
            f"{name} {m.value:g} on {fmt_date(m.time)}"
            for name, m in (("INR", inr), ("platelets", plt))
            if m is not None and m.value is not None
        )
        items.append(
            ChecklistItem(
                "coagulation", label, "met", None, f"no active antithrombotic; {values} within policy limits"
            )
        )

    # 5. Medical optimisation.
    label = "Medical optimisation: glycaemic control, cardiopulmonary assessment (prone tolerance, OSA/COPD)"
    rid = _first(fired, r.GLYCEMIC, r.SEDATION)
    if rid:
        items.append(_problem("optimisation", label, rid, "glycaemic or cardiopulmonary issue on record"))
    else:
        items.append(
            ChecklistItem(
                "optimisation",
                label,
                "needs-documentation",
                None,
                "no problem found in the record; document prone tolerance and the anaesthesia plan",
            )
        )

    # 6. Imaging plan.
    label = "Imaging plan: pre-procedure CT/MRI for posterior wall, endplates, clefts, venous channels"
    if r.CONCORDANCE_MISSING in fired:
        items.append(_problem("imaging", label, r.CONCORDANCE_MISSING, "no recent spine MRI/CT"))
    elif keys.IMAGING in failed or latest is None:
        items.append(ChecklistItem("imaging", label, "needs-documentation", None, "imaging not retrieved"))
    else:
        items.append(
            ChecklistItem(
                "imaging",
                label,
                "met",
                None,
                f"{latest.modality.upper()} of {fmt_date(latest.time)} available for planning",
            )
        )

    # 7. Contrast allergy screen (chapter §2.1 checklist).
    label = "Contrast allergy screened; non-ionic/alternative plan ready"
    if r.ALLERGY_CONTRAST in fired:
        items.append(_problem("contrast", label, r.ALLERGY_CONTRAST, "contrast allergy on record"))
    else:
        why = (
            "allergy list could not be retrieved"
            if keys.ALLERGIES in failed
            else "no contrast allergy recorded; confirm with the patient"
        )
        items.append(ChecklistItem("contrast", label, "needs-documentation", None, why))

    # 8–10. Procedural plans the record cannot show.
    items.append(
        ChecklistItem(
            "access",
            "Access plan: uni- vs bipedicular, midline crossing, bailout if distribution is poor",
            "needs-documentation",
            None,
            "procedural plan — document before the procedure",
        )
    )
    label = "Cement plan: high-viscosity PMMA, expected volume, stop-rules declared to the team"
    if r.ALLERGY_CEMENT in fired:
        items.append(
            _problem("cement", label, r.ALLERGY_CEMENT, "cement component allergy or implant reaction")
        )
    else:
        items.append(
            ChecklistItem(
                "cement",
                label,
                "needs-documentation",
                None,
                "procedural plan — document before the procedure",
            )
        )
    items.append(
        ChecklistItem(
            "radiation",
            "Radiation plan: pulse rate, collimation, C-arm geometry, shielding, last-image hold",
            "needs-documentation",
            None,
            "procedural plan — document before the procedure",
        )
    )

    # 11. Prophylaxis.
    items.append(
        ChecklistItem(
            "prophylaxis",
            "Prophylaxis: antibiotics per policy; DVT prophylaxis if indicated",
            "needs-documentation",
            r.RISK_FACTORS if r.RISK_FACTORS in fired else None,
            "infection risk factors on record — prophylaxis especially important"
            if r.RISK_FACTORS in fired
            else "document the prophylaxis given",
        )
    )

    # 12. Consent content.
    items.append(
        ChecklistItem(
            "consent",
            "Consent covers cement leakage/embolism, neural injury, infection, adjacent-level fracture",
            "needs-documentation",
            None,
            "document the consent discussion",
        )
    )
    return items


def _cell(text: str) -> str:
    # Labels and reasons are our own text (no record content), so only a table-breaking pipe needs care.
    return " ".join(text.split()).replace("|", "\\|")


def checklist_card(inp: HookInput, fired_rule_ids: Iterable[str]) -> CardSpec:
    items = checklist_items(inp, fired_rule_ids)
    counts = {s: sum(1 for i in items if i.status == s) for s in STATUS_LABEL}
    rows = "\n".join(f"| {_cell(i.label)} | {STATUS_LABEL[i.status]} | {_cell(i.evidence)} |" for i in items)
    return CardSpec(
        rule_id=r.CHECKLIST,
        indicator="info",
        summary=r.clip(
            f"VA pre-procedure checklist: {counts['problem']} problem(s), "
            f"{counts['needs-documentation']} to document, {counts['met']} met by data"
        ),
        detail=(
            "Readiness for vertebral augmentation against the pre-procedure master checklist. "
            "*Met by data* means the record shows it; *needs documentation* is not a failure, only "
            "something the record cannot show.\n\n"
            "| Item | Status | Why |\n|---|---|---|\n" + rows
        ),
        citation="Chapter MASTER CHECKLIST 'Pre-procedure' and §2.1 Checklist — Pre-procedure safety",
        links=(
            LinkSpec(label="Pre-procedure checklist: what each item means", url="/docs/rules/pre.checklist"),
        ),
    )
