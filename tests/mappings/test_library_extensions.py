"""Local value-set extensions: additions only; unknown ids and malformed files rejected, file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_mappings.extract import extract_facts
from fhir_mappings.library import SNOMED, default_library, load_library


def _write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text)
    return p


def test_extension_adds_codes_and_text(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "bone-cement.yaml",
        "codes:\n  - {system: 'http://hospital.example/allergens', code: 'CEM-1', display: 'Palacos R'}\n"
        "text: ['palacos']\n",
    )
    _write(
        tmp_path,
        "anticoagulants.yaml",
        "ingredients:\n  - name: acenocoumarol\n    text: [sintrom]\n"
        "    codes: [{system: 'http://hospital.example/drugs', code: 'D42', display: 'Sintrom 4 mg'}]\n",
    )
    lib = load_library(tmp_path)
    assert {h.concept for h in lib.match_coding("http://hospital.example/allergens", "CEM-1")} == {
        "bone-cement"
    }
    assert "bone-cement" in {h.concept for h in lib.match_text("allergic to Palacos")}
    (hit,) = lib.match_coding("http://hospital.example/drugs", "D42")
    assert (hit.ingredient, hit.drug_class) == ("acenocoumarol", "anticoagulant")
    # packaged content is still there (never removed)
    assert "bone-cement" in {h.concept for h in lib.match_text("PMMA allergy")}
    assert {h.concept for h in lib.match_coding(SNOMED, "426722004")} == {"contrast-iodinated"}
    # the default library is untouched
    assert default_library().match_coding("http://hospital.example/allergens", "CEM-1") == []
    facts = extract_facts(
        [
            {
                "resourceType": "MedicationRequest",
                "id": "m",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": "Sintrom 4 mg tablet"},
            }
        ],
        library=lib,
    )
    assert [(m.ingredient, m.drug_class) for m in facts.medications] == [("acenocoumarol", "anticoagulant")]


def test_unknown_id_rejected_naming_file(tmp_path: Path) -> None:
    _write(tmp_path, "not-a-valueset.yaml", "codes: []\n")
    with pytest.raises(ValueError, match=r"not-a-valueset\.yaml"):
        load_library(tmp_path)


@pytest.mark.parametrize(
    "body",
    [
        "codes: {system: x}\n",  # not a list
        "codes:\n  - {code: '1'}\n",  # no system
        "codes:\n  - {system: 'http://x', code: '1', prefix: '1'}\n",  # both
        "codes:\n  - {system: 'http://x', code: '1', status: UNVERIFIED}\n",
        "text: [1, 2]\n",
        "- just a list\n",
        "codes: [\n",  # YAML syntax error
        "remove: ['426722004']\n",  # unsupported key: extensions never remove
    ],
)
def test_malformed_extension_rejected_naming_file(tmp_path: Path, body: str) -> None:
    _write(tmp_path, "contrast-iodinated.yaml", body)
    with pytest.raises(ValueError, match=r"contrast-iodinated\.yaml"):
        load_library(tmp_path)


def test_missing_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_library(tmp_path / "nope")


def test_default_library_is_cached() -> None:
    assert default_library() is default_library()
