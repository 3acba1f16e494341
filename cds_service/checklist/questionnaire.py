"""The master checklist as data, as a FHIR R4 Questionnaire, and completed answers as a QuestionnaireResponse.

The item wording is our own paraphrase of the chapter's MASTER CHECKLIST (never its sentences). The
pre-procedure linkIds are `pre.<id>` for the ids `hooks.preprocedure.checklist_items` produces, so the
page can pre-mark them from a snapshot; a test keeps the two in step. Consent gets its own section
because the four risks the consent must cover are separate things to confirm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

QUESTIONNAIRE_ID = "va-cds-master-checklist"
QUESTIONNAIRE_URL = f"https://va-cds.org/fhir/Questionnaire/{QUESTIONNAIRE_ID}"
QUESTIONNAIRE_VERSION = "1.0.0"
PATIENT_HASH_SYSTEM = "https://va-cds.org/fhir/NamingSystem/patient-hash"
SNAPSHOT_SYSTEM = "https://va-cds.org/fhir/NamingSystem/checklist-snapshot"
NOTE_MAX = 2000  # characters kept per section note: a note, not a document


@dataclass(frozen=True, slots=True)
class Item:
    link_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Section:
    link_id: str
    title: str
    intro: str
    items: tuple[Item, ...]

    @property
    def notes_link_id(self) -> str:
        return f"{self.link_id}.notes"


def _items(prefix: str, *pairs: tuple[str, str]) -> tuple[Item, ...]:
    return tuple(Item(f"{prefix}.{key}", text) for key, text in pairs)


SECTIONS: tuple[Section, ...] = (
    Section(
        "pre",
        "Pre-procedure",
        "Items the record could answer are marked from the data the service saw when the order was placed.",
        _items(
            "pre",
            (
                "acuity",
                "Fracture is recent and the painful level matches imaging (STIR oedema, focal "
                "tenderness to percussion)",
            ),
            (
                "infection",
                "No active infection: temperature, inflammatory labs and any past spinal infection reviewed",
            ),
            (
                "neuro",
                "Neurological exam done; no cord or cauda equina signs that call for decompression instead",
            ),
            ("coagulation", "Blood thinners reviewed and held per policy; any coagulopathy corrected"),
            (
                "optimisation",
                "Medically optimised: glucose controlled; heart and lungs assessed, including "
                "lying prone and sleep apnoea/COPD",
            ),
            (
                "imaging",
                "Recent CT or MRI reviewed for the posterior wall, endplates, clefts and venous channels",
            ),
            ("contrast", "Contrast allergy asked about; alternative agent or premedication ready if needed"),
            (
                "access",
                "Approach chosen (one or both pedicles), aim to reach the midline, fallback if cement "
                "spreads poorly",
            ),
            ("cement", "Cement plan: high-viscosity PMMA, expected volume, stop criteria told to the team"),
            (
                "radiation",
                "Radiation plan: pulse rate, collimation, C-arm set-up, staff shielding, last-image hold",
            ),
            ("prophylaxis", "Antibiotic prophylaxis per local policy; thromboprophylaxis if indicated"),
            ("consent", "Informed consent obtained and recorded"),
        ),
    ),
    Section(
        "consent",
        "Consent discussion",
        "Risks the consent conversation must cover.",
        _items(
            "consent",
            ("leakage", "Cement leaking out of the bone, including cement travelling to the lungs"),
            ("neural", "Injury to the spinal cord or nerve roots"),
            ("infection", "Infection at the treated level"),
            ("adjacent", "A new fracture at a neighbouring vertebra"),
        ),
    ),
    Section(
        "intra",
        "During the procedure: trajectory, injection, radiation",
        "Time-out and technique.",
        _items(
            "intra",
            (
                "positioning",
                "Prone with the abdomen free, chest and pelvis supported, eyes and pressure "
                "points padded, lines secured",
            ),
            (
                "timeout",
                "Time-out: target level confirmed on AP and true lateral views; device and cement "
                "brand noted",
            ),
            (
                "trajectory",
                "Needle kept inside the pedicle walls on AP and under the pedicle roof on lateral, "
                "checked before crossing the cortex",
            ),
            (
                "test",
                "Optional venogram or slow trial injection; stop if epidural or venous filling shows early",
            ),
            (
                "injection",
                "Cement given in its doughy phase, in small amounts, under a continuous lateral "
                "view with pauses",
            ),
            ("stop", "Injection stopped when cement nears the back third of the body, a foramen or the disc"),
            ("leak", "On leakage: pause for the cement to set, reposition the cannula, never force more in"),
            (
                "radiation",
                "Radiation: shots planned, little magnification, detector close and tube far; DAP "
                "and screening time recorded",
            ),
        ),
    ),
    Section(
        "pce",
        "If pulmonary cement embolism is suspected",
        "Work down the steps that apply.",
        _items(
            "pce",
            ("runoff", "Venous run-off seen: stop, recheck the needle, let the cement thicken or redirect"),
            (
                "symptoms",
                "Breathing symptoms: oxygen, vital signs, ECG, chest X-ray; CT pulmonary "
                "angiography if indicated",
            ),
            ("small", "Small embolus without symptoms: observe; weigh anticoagulation by load and risk"),
            (
                "symptomatic",
                "Symptomatic or central embolus: anticoagulate unless contraindicated; ask "
                "IR/cardiology about retrieval",
            ),
            (
                "massive",
                "Massive or intracardiac cement: emergency cardiothoracic or IR treatment with full support",
            ),
        ),
    ),
    Section(
        "post",
        "After the procedure and at discharge",
        "Before the patient goes home.",
        _items(
            "post",
            (
                "neuro",
                "Neurological check straight after; new pain or deficit recorded; imaging only for symptoms",
            ),
            ("site", "Puncture site checked; pain relief and antiemetics given; out of bed early"),
            (
                "red-flags",
                "Told when to come back: fever, wound trouble, new leg pain or weakness, "
                "breathlessness or pain on breathing",
            ),
            (
                "infection",
                "If infection is suspected: CBC, CRP/ESR, contrast MRI, blood cultures, infectious "
                "diseases consult",
            ),
            (
                "canal",
                "If cement in the canal or retropulsion is suspected: urgent MRI/CT; spine surgery "
                "if symptomatic",
            ),
            (
                "bone-health",
                "Bone health: calcium/vitamin D, treatment chosen by fracture risk, DXA/FRAX "
                "booked, falls referral",
            ),
            (
                "followup",
                "Follow-up booked: clinic at 2–6 weeks; bone health and new fractures at 3–6 months",
            ),
            (
                "documentation",
                "Note records levels, approach, cement brand/lot/volume/phase, complications, "
                "DAP and screening time",
            ),
        ),
    ),
)

ITEM_IDS: frozenset[str] = frozenset(i.link_id for s in SECTIONS for i in s.items)
NOTE_IDS: frozenset[str] = frozenset(s.notes_link_id for s in SECTIONS)


def master_questionnaire(date: str = "2026-11-22") -> dict[str, Any]:
    """The Questionnaire served at QUESTIONNAIRE_URL (a plain dict, validated by the tests)."""
    return {
        "resourceType": "Questionnaire",
        "id": QUESTIONNAIRE_ID,
        "url": QUESTIONNAIRE_URL,
        "version": QUESTIONNAIRE_VERSION,
        "name": "VaCdsMasterChecklist",
        "title": "Vertebral augmentation master checklist (va-cds)",
        "status": "active",
        "subjectType": ["Patient"],
        "date": date,
        "publisher": "va-cds",
        "description": (
            "Safety checklist for vertebroplasty and kyphoplasty from before the procedure to discharge, "
            "paraphrased from the chapter's master checklist (Aydoğdu & Durak 2025)."
        ),
        "item": [
            {
                "linkId": s.link_id,
                "text": s.title,
                "type": "group",
                "item": [
                    *({"linkId": i.link_id, "text": i.text, "type": "boolean"} for i in s.items),
                    {"linkId": s.notes_link_id, "text": f"Notes — {s.title}", "type": "text"},
                ],
            }
            for s in SECTIONS
        ],
    }


def questionnaire_response(
    ticked: set[str],
    notes: Mapping[str, str],
    *,
    authored: datetime,
    snapshot_id: str,
    patient_hash: str | None,
) -> dict[str, Any]:
    """A completed QuestionnaireResponse: every item answered true/false, non-empty notes as text.

    Unticked items are answered `false` rather than left out, so a reader can tell "not confirmed" from
    "not on this version of the form". The subject is the keyed patient hash as an identifier (never a
    resolvable reference: the service does not hold the patient id).
    """
    groups = []
    for s in SECTIONS:
        answers: list[dict[str, Any]] = [
            {"linkId": i.link_id, "text": i.text, "answer": [{"valueBoolean": i.link_id in ticked}]}
            for i in s.items
        ]
        note = (notes.get(s.notes_link_id) or "").strip()[:NOTE_MAX]
        if note:
            answers.append({"linkId": s.notes_link_id, "answer": [{"valueString": note}]})
        groups.append({"linkId": s.link_id, "text": s.title, "item": answers})
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": SNAPSHOT_SYSTEM, "value": snapshot_id},
        "questionnaire": f"{QUESTIONNAIRE_URL}|{QUESTIONNAIRE_VERSION}",
        "status": "completed",
        "authored": authored.isoformat(timespec="seconds"),
        "item": groups,
    }
    if patient_hash:
        resource["subject"] = {
            "identifier": {"system": PATIENT_HASH_SYSTEM, "value": patient_hash},
            "display": "Patient (keyed pseudonym)",
        }
    return resource
