"""Every value set: a positive and a negative match; shipped codes are verified/partial only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fhir_mappings.library import (
    ATC,
    ICD10CM,
    LOINC,
    PACKAGED_DIR,
    RXNORM,
    SNOMED,
    default_library,
    normalize_system,
)

LIB = default_library()

REQUIRED_IDS = """
vertebral-augmentation anticoagulants antiplatelets osteoporosis-therapy immunosuppressants
calcium-vitamin-d vertebral-fracture discitis vertebral-osteomyelitis epidural-abscess spondylitis
sepsis-bacteremia diabetes immunosuppression copd osa heart-failure coagulopathy cord-compression
radiculopathy myelopathy cauda-equina pulmonary-embolism pneumothorax hemothorax hemorrhage
anaphylaxis osteoporosis myeloma-metastasis back-pain dyspnea chest-pain pleuritic-pain
new-motor-deficit saddle-anesthesia bowel-bladder-dysfunction retropulsion wound-infection
hypersensitivity-reaction contrast-iodinated contrast-class bone-cement benzoyl-peroxide dmpt inr
platelets wbc hemoglobin crp esr temperature heart_rate resp_rate spo2 systolic_bp diastolic_bp
hba1c glucose creatinine egfr crcl pain tryptase blood_culture weight bp-panel mri-spine
mri-spine-contrast ct-spine ctpa chest-xray cta-cap dxa ecg cbc neuro-exam
""".split()


def _files() -> list[Path]:
    return sorted(PACKAGED_DIR.glob("*.yaml"))


def test_all_required_value_sets_exist() -> None:
    missing = [i for i in REQUIRED_IDS if i not in LIB.valuesets]
    assert missing == []


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_file_is_documented_and_ships_only_verified_or_partial(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert data["id"] == path.stem
    assert data["description"].strip()
    assert data["sources"], "each value set names the source(s) it was verified against"
    entries = list(data.get("codes") or [])
    for ing in data.get("ingredients") or []:
        entries.extend(ing.get("codes") or [])
    for entry in entries:
        assert entry["status"] in ("verified", "partial"), entry
        assert entry["system"].startswith("http"), entry
        assert entry.get("display"), entry
        assert entry.get("source"), entry


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (SNOMED, "392010000"),  # claimed vertebroplasty concept: UNVERIFIED
        (SNOMED, "429616001"),
        (SNOMED, "447766008"),
        (RXNORM, "993449"),  # denosumab: UNVERIFIED
        (RXNORM, "1546356"),  # dabigatran IN: UNVERIFIED
        (RXNORM, "4450"),  # fluconazole, not ergocalciferol
        (ICD10CM, "Z79.52"),
        (ICD10CM, "K68.3"),
        (ICD10CM, "M84.48XA"),
        ("http://www.ama-assn.org/go/cpt", "22521"),
        (SNOMED, "60168000"),  # plain osteomyelitis, not vertebral
        (ICD10CM, "I26.90"),  # septic PE
        (LOINC, "4544-3"),  # hematocrit is not hemoglobin
    ],
)
def test_unverified_or_trap_codes_do_not_match(system: str, code: str) -> None:
    assert LIB.match_coding(system, code) == []


def _positive_case(vs_id: str) -> tuple[str, str] | None:
    vs = LIB.valuesets[vs_id]
    for entry in vs.codes:
        if "code" in entry:
            return entry["system"], entry["code"]
    for entry in vs.codes:
        if "prefix" in entry:
            return entry["system"], entry["prefix"] + ("A" if entry["system"] == ICD10CM else "")
    return None


@pytest.mark.parametrize("vs_id", sorted(LIB.valuesets))
def test_each_value_set_positive_and_negative(vs_id: str) -> None:
    vs = LIB.valuesets[vs_id]
    case = _positive_case(vs_id)
    if case is not None:
        system, code = case
        assert vs_id in {h.concept for h in LIB.match_coding(system, code)}
        # the same code in the wrong system does not match
        assert vs_id not in {h.concept for h in LIB.match_coding("http://example.org/local", code)}
    terms = [t["term"] for t in vs.text if not t.get("needs_spine_context")]
    if terms:
        term = terms[0]
        assert vs_id in {h.concept for h in LIB.match_text(f"Patient has {term} today")}, term
        assert vs_id not in {h.concept for h in LIB.match_text(f"Patient denies {term}.")}, term
    assert case is not None or terms, f"{vs_id} has neither codes nor text"
    assert vs_id not in {h.concept for h in LIB.match_text("routine visit, feeling well")}


def test_icd10_with_and_without_dot_and_case() -> None:
    for code in ("G47.33", "G4733", "g47.33"):
        assert {h.concept for h in LIB.match_coding(ICD10CM, code)} == {"osa"}
    for code in ("M80.08XA", "M8008XA", "M80.08XD", "M80.08XS"):
        assert "vertebral-fracture" in {h.concept for h in LIB.match_coding(ICD10CM, code)}
    ankle = {h.concept for h in LIB.match_coding(ICD10CM, "M80.07XA")}  # ankle/foot: not vertebral
    assert "vertebral-fracture" not in ankle
    assert "osteoporotic-fracture" in ankle
    # family prefixes: E11.65 is diabetes, E16.2 is not
    assert "diabetes" in {h.concept for h in LIB.match_coding(ICD10CM, "E11.65")}
    assert LIB.match_coding(ICD10CM, "E16.2") == []


def test_system_uri_normalisation() -> None:
    assert normalize_system("https://loinc.org/") == LOINC
    assert normalize_system("urn:oid:2.16.840.1.113883.6.96") == SNOMED
    assert normalize_system("HTTP://snomed.info/sct") == SNOMED
    assert {h.concept for h in LIB.match_coding("https://loinc.org/", "6301-6")} == {"inr"}
    assert {h.concept for h in LIB.match_coding("urn:oid:2.16.840.1.113883.6.88", "855332")} == {
        "anticoagulants"
    }


def test_product_codes_roll_up_to_ingredient() -> None:
    (hit,) = LIB.match_coding(RXNORM, "855332")  # warfarin sodium 5 MG tablet (SCD)
    assert (hit.ingredient, hit.drug_class) == ("warfarin", "anticoagulant")
    (hit,) = LIB.match_coding(RXNORM, "309362")
    assert (hit.ingredient, hit.drug_class) == ("clopidogrel", "antiplatelet")
    (hit,) = LIB.match_coding(RXNORM, "817958")  # aspirin / calcium carbonate combination
    assert (hit.ingredient, hit.drug_class) == ("aspirin", "antiplatelet")


@pytest.mark.parametrize(
    ("code", "concept", "ingredient"),
    [
        ("B01AA07", "anticoagulants", None),  # acenocoumarol: class-level VKA prefix
        ("B01AA03", "anticoagulants", "warfarin"),
        ("B01AB05", "anticoagulants", "enoxaparin"),
        ("B01AC04", "antiplatelets", "clopidogrel"),
        ("B01AE07", "anticoagulants", "dabigatran"),
        ("B01AF02", "anticoagulants", "apixaban"),
        ("B01AX05", "anticoagulants", "fondaparinux"),
        ("M05BA04", "osteoporosis-therapy", "alendronate"),
        ("M05BX04", "osteoporosis-therapy", "denosumab"),
        ("H05AA02", "osteoporosis-therapy", "teriparatide"),
        ("N02BA01", "antiplatelets", "aspirin"),
    ],
)
def test_atc_prefixes(code: str, concept: str, ingredient: str | None) -> None:
    hits = [h for h in LIB.match_coding(ATC, code) if h.concept == concept]
    assert hits, code
    if ingredient is not None:
        assert ingredient in {h.ingredient for h in hits}


def test_atc_negative() -> None:
    assert LIB.match_coding(ATC, "B01AD02") == []  # alteplase (enzymes) is not listed
    assert LIB.match_coding(ATC, "M05BB03") == []  # alendronate combination with vitamin D is not in M05BA


def test_text_brand_names_and_word_boundaries() -> None:
    assert {(h.ingredient, h.concept) for h in LIB.match_text("Eliquis 5 mg BID")} == {
        ("apixaban", "anticoagulants")
    }
    assert {h.ingredient for h in LIB.match_text("Plavix 75mg")} == {"clopidogrel"}
    assert LIB.match_text("heparinase assay", frozenset({"medication"})) == []  # word boundary
    assert {h.ingredient for h in LIB.match_text("Aggrenox capsule")} == {"aspirin", "dipyridamole"}


def test_spine_context_required_for_bare_acronyms() -> None:
    assert "vertebral-augmentation" not in {h.concept for h in LIB.match_text("PVP scheduled")}
    assert "vertebral-augmentation" in {h.concept for h in LIB.match_text("PVP at L1")}
    assert "vertebral-augmentation" in {h.concept for h in LIB.match_text("BKP for T12 compression fracture")}
    assert "vertebral-augmentation" in {h.concept for h in LIB.match_text("Balloon kyphoplasty")}


@pytest.mark.parametrize(
    "text",
    [
        "no history of COPD",
        "Patient denies dyspnea",
        "negative for discitis",
        "epidural abscess ruled out",
        "no evidence of pneumothorax",
        "compression fracture; pain without radiculopathy",
    ],
)
def test_negation_suppresses_text_match(text: str) -> None:
    concepts = {h.concept for h in LIB.match_text(text)}
    assert not concepts & {"copd", "dyspnea", "discitis", "epidural-abscess", "pneumothorax", "radiculopathy"}


def test_negation_is_clause_local() -> None:
    concepts = {h.concept for h in LIB.match_text("No fever. Dyspnea on exertion since yesterday")}
    assert "dyspnea" in concepts
