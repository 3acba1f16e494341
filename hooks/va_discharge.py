"""`va-discharge`: the post-procedure & discharge checklist when a patient with a recent VA goes home.

Applies on encounter-discharge when the encounter being discharged holds a vertebral augmentation (VA)
Procedure, or a VA was performed within the policy's recent-VA days before the request. Cards: a missing
post-procedure neurological exam (the one *-missing variant after the procedure), the red flags to explain,
what the Procedure record still lacks, the bone-health plan, and the follow-up timing (MASTER CHECKLIST
"Post-procedure & Discharge", chapter §5).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from cds_service.contracts import (
    CardSpec,
    HookInput,
    OverrideReasonSpec,
    RuleDoc,
    ServiceDefinition,
    md_escape,
)
from fhir_mappings.facts import ClinicalFacts, ConditionFact, Evidence, ProcedureFact
from hooks.common import data_unavailable_card, fmt_date
from hooks.policy import Policy
from hooks.va_postprocedure import (
    BONE_OVERRIDES,
    FOLLOWUP_LINES,
    VA_DONE_STATUSES,
    bone_health_suggestions,
    describe_va,
    osteoporosis_therapy,
    recent_dxa,
    va_end,
    va_time,
)
from hooks.va_postprocedure import (
    PREFETCH as POST_PREFETCH,
)

SERVICE_ID = "va-discharge"
HOOKS = ("encounter-discharge",)

NEURO_EXAM_MISSING = "discharge.neuro-exam-missing"
RED_FLAGS = "discharge.red-flags"
DOCUMENTATION = "discharge.documentation"
BONE_HEALTH = "discharge.bone-health"
FOLLOWUP = "discharge.followup"
DISCHARGE_RULE_IDS = (NEURO_EXAM_MISSING, RED_FLAGS, DOCUMENTATION, BONE_HEALTH, FOLLOWUP)

_NEURO_TEXT = re.compile(r"\bneuro(logical|logic)?\s*(exam|examination|assessment|check|status)\b", re.I)

CITE_NEURO = (
    "MASTER CHECKLIST 'Post-procedure & Discharge' (immediate neuro check); Chapter §3.3.3 "
    "(discharge & follow-up); ref [29]"
)
CITE_RED_FLAGS = "MASTER CHECKLIST 'Post-procedure & Discharge' (discharge red flags); Chapter §5"
CITE_DOCUMENTATION = (
    "MASTER CHECKLIST 'Post-procedure & Discharge' (documentation); Chapter §3.3.3 (peri-operative details "
    "to document) and §3.2.3 (post-event care); refs [21–24,29]"
)
CITE_BONE = (
    "Chapter §5 (bone-health stewardship); MASTER CHECKLIST 'Post-procedure & Discharge'; refs [20,40]"
)
CITE_FOLLOWUP = "Chapter §5 (follow-up pathway); MASTER CHECKLIST 'Post-procedure & Discharge'"

NEURO_OVERRIDES = (
    OverrideReasonSpec("documented-elsewhere", "Neurological exam documented elsewhere (e.g. nursing notes)"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
)

RED_FLAG_LINES = (
    "Fever or chills.",
    "Wound problems: redness, swelling, discharge or bleeding at the puncture site.",
    "New pain shooting down an arm or leg, numbness, or weakness; trouble controlling bladder or bowel.",
    "Shortness of breath, chest pain or pain on breathing.",
    "A sudden new or much worse back pain (a new fracture is possible).",
)

# Prefetch: the post-procedure queries these checks need, plus the encounter being discharged
# (encounterId is a required context field of encounter-discharge, so the token always resolves).
_KEYS = (
    "patient",
    "procedures",
    "conditions",
    "examObservations",
    "medications",
    "medicationStatements",
    "serviceRequests",
    "imaging",
)
PREFETCH: dict[str, str] = {
    **{k: POST_PREFETCH[k] for k in _KEYS},
    "encounter": "Encounter/{{context.encounterId}}",
}

_CHECK_SCOPE = "Whether a vertebral augmentation is on record for this discharge (all discharge checks)"
_CHECK_NEURO = "Post-procedure neurological exam documented (discharge.neuro-exam-missing)"
_CHECK_DOC = "Procedure documentation completeness (discharge.documentation)"
_CHECK_BONE = "Bone-health plan before discharge (discharge.bone-health)"
CHECKS_BY_KEY: dict[str, tuple[str, ...]] = {
    "procedures": (_CHECK_SCOPE, _CHECK_NEURO, _CHECK_DOC, _CHECK_BONE),
    "examObservations": (_CHECK_NEURO,),
    "conditions": (_CHECK_NEURO,),
    "medications": (_CHECK_BONE,),
    "medicationStatements": (_CHECK_BONE,),
    "serviceRequests": (_CHECK_BONE,),
    "imaging": (_CHECK_BONE,),
    "encounter": (_CHECK_SCOPE,),
}
# Sources the neuro-exam check reads: when one failed, "no exam found" is unknown, not missing.
NEURO_SOURCES = frozenset({"procedures", "examObservations"})
BONE_SOURCES = frozenset({"medications", "medicationStatements"})


def _in_encounter(proc: ProcedureFact, inp: HookInput) -> bool:
    if inp.encounter_id is None:
        return False
    if proc.encounter and proc.encounter.rsplit("/", 1)[-1] == inp.encounter_id:
        return True
    # A VA without an encounter reference but inside the discharged encounter's period belongs to it.
    start = va_time(proc)
    for enc in inp.facts.encounters:
        if enc.id != inp.encounter_id or enc.start is None or start is None or proc.encounter:
            continue
        if enc.start <= start <= (enc.end or inp.now):
            return True
    return False


def discharge_va(inp: HookInput, policy: Policy) -> ProcedureFact | None:
    """The VA this discharge is about: the latest in the encounter, else the latest within the recent days."""
    vas = [p for p in inp.facts.procedures if p.is_va and p.status in VA_DONE_STATUSES]
    in_enc = [p for p in vas if _in_encounter(p, inp)]
    if in_enc:
        return max(in_enc, key=lambda p: va_time(p) or datetime.min.replace(tzinfo=inp.now.tzinfo))
    since = inp.now - timedelta(days=policy.value("discharge_recent_va_days"))
    recent = [p for p in vas if (t := va_time(p)) is not None and since <= t <= inp.now]
    return max(recent, key=lambda p: va_time(p) or inp.now) if recent else None


def _neuro_exam_after(facts: ClinicalFacts, after: datetime | None) -> Evidence | None:
    """A neurological exam (Procedure, or Observation read as a finding) dated at/after the VA's end."""
    if after is None:
        return None
    for proc in facts.procedures:
        if proc.is_va or proc.status in ("entered-in-error", "not-done"):
            continue
        if "neuro-exam" in proc.concepts or _NEURO_TEXT.search(proc.display):
            when = proc.start or proc.end
            if when is not None and when >= after:
                return proc.evidence
    cond: ConditionFact
    for cond in facts.conditions:
        if "neuro-exam" in cond.concepts or _NEURO_TEXT.search(cond.display):
            if cond.onset is not None and cond.onset >= after:
                return cond.evidence
    return None


def _detail(why: str, va: ProcedureFact, body: list[str], policy_line: str, citation: str) -> str:
    parts = [why, "", f"**Procedure:** {describe_va(va)} ({md_escape(va.evidence.reference)})", "", *body]
    if policy_line:
        parts += ["", f"**Policy values used:** {policy_line}."]
    parts += ["", f"*Source: {citation}.*"]
    return "\n".join(parts)


def _card_neuro(inp: HookInput, va: ProcedureFact) -> CardSpec | None:
    end = va_end(va)
    if _neuro_exam_after(inp.facts, end) is not None:
        return None
    return CardSpec(
        rule_id=NEURO_EXAM_MISSING,
        indicator="warning",
        summary="No neurological exam recorded since the VA: document one before discharge",
        detail=_detail(
            f"No neurological examination dated after the end of the procedure ({fmt_date(end)}) was found.",
            va,
            [
                "**What to do, in order**",
                "1. Examine and record lower- (and, for high thoracic levels, upper-) limb motor and sensory "
                "function, saddle sensation and sphincter function.",
                "2. Compare with the pre-procedure baseline neurological exam.",
                "3. Any new deficit → urgent MRI/CT and spine surgery review before the patient leaves.",
            ],
            "",
            CITE_NEURO,
        ),
        citation=CITE_NEURO,
        evidence=(va.evidence,),
        override_reasons=NEURO_OVERRIDES,
    )


def _card_red_flags(va: ProcedureFact) -> CardSpec:
    body = ["**Explain to the patient and write on the discharge sheet — seek help at once for:**"]
    body += [f"- {line}" for line in RED_FLAG_LINES]
    body += [
        "",
        "Give the number to call (the treating team or the on-call service) and when to go to the emergency "
        "department; teach the signs of cement embolism and of infection.",
    ]
    return CardSpec(
        rule_id=RED_FLAGS,
        indicator="info",
        summary="Before discharge, explain the red flags after vertebral augmentation and who to call",
        detail=_detail("Discharge education after vertebral augmentation.", va, body, "", CITE_RED_FLAGS),
        citation=CITE_RED_FLAGS,
        evidence=(va.evidence,),
    )


def _card_documentation(va: ProcedureFact) -> CardSpec | None:
    missing: list[str] = []
    if not (va.has_level or va.level):
        missing.append("Level(s) treated (Procedure.bodySite, or the level in the text/note)")
    if not va.has_approach:
        missing.append("Approach (unipedicular / bipedicular, transpedicular / extrapedicular)")
    if not va.has_cement_details:
        missing.append("Cement details: brand/product, lot and volume")
    if not va.has_complications:
        missing.append("Complications (Procedure.complication, or a note stating none)")
    if not missing:
        return None
    body = ["**Still missing from the Procedure record:**", *[f"- {m}" for m in missing]]
    body += [
        "",
        "Also confirm the record states the cement viscosity/phase at injection and the radiation dose "
        "(DAP) and fluoroscopy time; these are not checked automatically.",
    ]
    return CardSpec(
        rule_id=DOCUMENTATION,
        indicator="info",
        summary=f"Procedure record incomplete: {len(missing)} documentation item(s) missing before discharge",
        detail=_detail(
            "The procedure record supports follow-up, complication review and any future augmentation.",
            va,
            body,
            "",
            CITE_DOCUMENTATION,
        ),
        citation=CITE_DOCUMENTATION,
        evidence=(va.evidence,),
    )


def _card_bone(inp: HookInput, policy: Policy, va: ProcedureFact) -> CardSpec | None:
    therapy = osteoporosis_therapy(inp.facts, policy, inp.now)
    if therapy.current or therapy.planned:
        return None
    years = policy.value("dxa_interval_years")
    dxa = recent_dxa(inp.facts, inp.now, years)
    body = [
        "No anti-resorptive or anabolic therapy is active or planned (calcium/vitamin D alone do not count).",
        "",
        "**Plan before discharge, in order**",
        "1. Calcium and vitamin D sufficiency.",
        "2. Start or arrange anti-resorptive or anabolic therapy according to fracture risk.",
        f"3. Schedule DXA/FRAX if none in the last {years:g} years"
        + (f" (last found: {md_escape(dxa.summary)})." if dxa else " (none found)."),
        "4. Falls-clinic and physiotherapy referral when indicated.",
    ]
    policy_line = (
        f"zoledronic acid counts for {policy.value('zoledronic_interval_months'):g} months, denosumab for "
        f"{policy.value('denosumab_interval_months'):g} months after a dose; DXA interval {years:g} years"
    )
    return CardSpec(
        rule_id=BONE_HEALTH,
        indicator="warning",
        summary="No osteoporosis therapy active or planned: agree a bone-health plan before discharge",
        detail=_detail(
            "Untreated bone fragility drives new fractures after augmentation.",
            va,
            body,
            policy_line,
            CITE_BONE,
        ),
        citation=CITE_BONE,
        evidence=(va.evidence, *((dxa,) if dxa else ())),
        policy_used={
            "zoledronic_interval_months": policy.value("zoledronic_interval_months"),
            "denosumab_interval_months": policy.value("denosumab_interval_months"),
            "dxa_interval_years": years,
        },
        suggestions=bone_health_suggestions(
            inp, policy, f"Bone-health plan after vertebral augmentation on {fmt_date(va_time(va))}"
        ),
        override_reasons=BONE_OVERRIDES,
    )


def _card_followup(va: ProcedureFact) -> CardSpec:
    body = ["**Book before the patient leaves:**", *[f"{i}. {s}" for i, s in enumerate(FOLLOWUP_LINES, 1)]]
    return CardSpec(
        rule_id=FOLLOWUP,
        indicator="info",
        summary="Book follow-up: clinical review at 2–6 weeks, bone health and fracture screen at 3–6 months",
        detail=_detail("Follow-up timing after vertebral augmentation.", va, body, "", CITE_FOLLOWUP),
        citation=CITE_FOLLOWUP,
        evidence=(va.evidence,),
    )


def handle(inp: HookInput, policy: Policy) -> list[CardSpec]:
    """All discharge cards for one call; `[]` when no VA is in scope for this discharge."""
    unavailable = data_unavailable_card(inp, CHECKS_BY_KEY)
    if "procedures" in inp.unavailable:
        # Whether a VA is in scope is unknown: report the failure, never an all-clear checklist.
        return [unavailable] if unavailable else []
    va = discharge_va(inp, policy)
    if va is None:
        return []
    cards: list[CardSpec] = []
    if not (NEURO_SOURCES & inp.unavailable):
        neuro = _card_neuro(inp, va)
        if neuro is not None:
            cards.append(neuro)
    cards.append(_card_red_flags(va))
    doc = _card_documentation(va)
    if doc is not None:
        cards.append(doc)
    if not (BONE_SOURCES & inp.unavailable):
        bone = _card_bone(inp, policy, va)
        if bone is not None:
            cards.append(bone)
    cards.append(_card_followup(va))
    if unavailable is not None:
        cards.append(unavailable)
    return cards


RULE_DOCS: tuple[RuleDoc, ...] = (
    RuleDoc(
        rule_id=NEURO_EXAM_MISSING,
        title="Neurological exam missing after VA",
        indicator="warning",
        checks="Fires when no neurological examination (Procedure or Observation, by code or text) is dated "
        "at or after the end of the VA. Silent when the procedure or exam-observation source failed.",
        reads=("Procedure / Observation: neurological examination after the VA's end",),
        steps=(
            "Examine motor, sensory, saddle and sphincter function",
            "Compare with baseline",
            "New deficit → urgent imaging and spine surgery",
        ),
        citation=CITE_NEURO,
        hooks=HOOKS,
    ),
    RuleDoc(
        rule_id=RED_FLAGS,
        title="Discharge red flags",
        indicator="info",
        checks="Always when the service applies.",
        reads=("Procedure (VA) in the discharged encounter or within the recent-VA days",),
        steps=RED_FLAG_LINES,
        citation=CITE_RED_FLAGS,
        policy_keys=("discharge_recent_va_days",),
        hooks=HOOKS,
    ),
    RuleDoc(
        rule_id=DOCUMENTATION,
        title="Procedure documentation incomplete",
        indicator="info",
        checks="Fires when the VA Procedure lacks its level, approach, cement details or complications.",
        reads=("Procedure.bodySite, code text, note, usedCode/usedReference, complication",),
        steps=(
            "Record level(s), approach, cement brand/lot/volume, viscosity, complications, DAP/fluoro time",
        ),
        citation=CITE_DOCUMENTATION,
        hooks=HOOKS,
    ),
    RuleDoc(
        rule_id=BONE_HEALTH,
        title="No bone-health plan at discharge",
        indicator="warning",
        checks="Fires when no anti-resorptive or anabolic therapy is active (or an injectable within its "
        "interval) and none is drafted. Silent when the medication source failed.",
        reads=("MedicationRequest / MedicationStatement / draft orders (terminology §8)", "DXA history"),
        steps=(
            "Calcium/vitamin D",
            "Therapy per fracture risk",
            "DXA/FRAX if none in 2 years",
            "Falls clinic",
        ),
        citation=CITE_BONE,
        policy_keys=("zoledronic_interval_months", "denosumab_interval_months", "dxa_interval_years"),
        hooks=HOOKS,
    ),
    RuleDoc(
        rule_id=FOLLOWUP,
        title="Follow-up timing at discharge",
        indicator="info",
        checks="Always when the service applies.",
        reads=("Procedure (VA)",),
        steps=FOLLOWUP_LINES,
        citation=CITE_FOLLOWUP,
        hooks=HOOKS,
    ),
)


def services(policy: Policy) -> list[ServiceDefinition]:
    """The `va-discharge` service (one hook) bound to a loaded policy."""

    def handler(inp: HookInput) -> list[CardSpec]:
        return handle(inp, policy)

    return [
        ServiceDefinition(
            id=SERVICE_ID,
            hook="encounter-discharge",
            title="Vertebral augmentation: discharge checklist",
            description=(
                "At discharge after a vertebral augmentation (in this encounter or within the last "
                f"{policy.value('discharge_recent_va_days'):g} days): neurological exam documented, "
                "red flags, procedure documentation, bone-health plan and follow-up timing."
            ),
            prefetch=PREFETCH,
            usage_requirements=(
                "Needs read access to the discharged Encounter and the patient's Procedure, Condition, "
                "Observation, MedicationRequest, MedicationStatement, ServiceRequest and DiagnosticReport "
                "resources. Returns no cards when no vertebral augmentation is in scope."
            ),
            checks_by_key=CHECKS_BY_KEY,
            handler=handler,
            rules=RULE_DOCS,
        )
    ]
