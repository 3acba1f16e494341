"""Unit normalisation: each conversion, round-trips, unknown units never guessed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_mappings.facts import CANONICAL_UNITS
from fhir_mappings.units import UNITS, UnitError, from_canonical, normalize_quantity, to_canonical


@pytest.mark.parametrize(
    ("kind", "value", "unit", "expected"),
    [
        ("platelets", 250, "10*3/uL", 250),
        ("platelets", 250, "10*9/L", 250),
        ("platelets", 250000, "/uL", 250),
        ("platelets", 45, "10*3/mm3", 45),
        ("platelets", 45, "K/uL", 45),
        ("platelets", 45, "x10^9/L", 45),
        ("platelets", 45, "× 10⁹/L".replace("⁹", "^9"), 45),
        ("wbc", 12.5, "10*3/uL", 12.5),
        ("wbc", 12500, "cells/uL", 12.5),
        ("hemoglobin", 12.0, "g/dL", 12.0),
        ("hemoglobin", 120, "g/L", 12.0),
        ("hemoglobin", 12.0, "g/dl", 12.0),
        ("hemoglobin", 7.447, "mmol/L", 7.447 / 0.6206),
        ("temperature", 38.0, "Cel", 38.0),
        ("temperature", 100.4, "[degF]", 38.0),
        ("temperature", 100.4, "°F", 38.0),
        ("temperature", 98.6, "degF", 37.0),
        ("temperature", 37.5, "°C", 37.5),
        ("glucose", 10.0, "mmol/L", 180.0),
        ("glucose", 180, "mg/dL", 180.0),
        ("creatinine", 88.4, "umol/L", 1.0),
        ("creatinine", 176.8, "µmol/L", 2.0),
        ("creatinine", 1.2, "mg/dL", 1.2),
        ("crp", 1.5, "mg/dL", 15.0),
        ("crp", 15, "mg/L", 15.0),
        ("hba1c", 53, "mmol/mol", 0.09148 * 53 + 2.152),
        ("hba1c", 7.1, "%", 7.1),
        ("esr", 40, "mm/h", 40),
        ("esr", 40, "mm/hr", 40),
        ("inr", 2.4, "{INR}", 2.4),
        ("inr", 2.4, "1", 2.4),
        ("heart_rate", 110, "/min", 110),
        ("heart_rate", 110, "{beats}/min", 110),
        ("resp_rate", 26, "/min", 26),
        ("spo2", 91, "%", 91),
        ("systolic_bp", 85, "mm[Hg]", 85),
        ("diastolic_bp", 50, "mmHg", 50),
        ("egfr", 45, "mL/min/{1.73_m2}", 45),
        ("crcl", 42, "mL/min", 42),
        ("pain", 7, "{score}", 7),
        ("tryptase", 25, "ng/mL", 25),
        ("tryptase", 25, "ug/L", 25),
        ("weight", 70, "kg", 70),
        ("weight", 154.32, "[lb_av]", 154.32 * 0.45359237),
        ("weight", 70000, "g", 70),
    ],
)
def test_conversion(kind: str, value: float, unit: str, expected: float) -> None:
    assert to_canonical(kind, value, unit) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("kind", "unit"),
    [
        ("platelets", "mg"),
        ("hemoglobin", "%"),  # a hematocrit-style unit is not hemoglobin
        ("temperature", "mmHg"),
        ("egfr", "mL/min"),  # not per 1.73 m2: never silently treated as eGFR
        ("crp", "nmol/L"),
        ("glucose", "g"),
        ("platelets", "G/L"),  # ambiguous (giga vs gram): not guessed
    ],
)
def test_unknown_unit_raises(kind: str, unit: str) -> None:
    with pytest.raises(UnitError):
        to_canonical(kind, 1.0, unit)


def test_code_first_then_unit_text() -> None:
    assert normalize_quantity("temperature", 100.4, "[degF]", "Cel") == pytest.approx(38.0)
    assert normalize_quantity("temperature", 100.4, "weird-code", "°F") == pytest.approx(38.0)
    with pytest.raises(UnitError):
        normalize_quantity("temperature", 100.4, None, None)
    assert normalize_quantity("inr", 1.3, None, None) == 1.3  # dimensionless: absent unit is fine


def test_every_kind_has_a_canonical_identity() -> None:
    for kind, canonical in CANONICAL_UNITS.items():
        if kind == "blood_culture":
            continue
        assert to_canonical(kind, 3.0, canonical) == 3.0, kind


_PAIRS = [(k, u) for k, table in UNITS.items() for u in table]


@given(st.sampled_from(_PAIRS), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_round_trip(pair: tuple[str, str], value: float) -> None:
    kind, unit = pair
    back = from_canonical(kind, to_canonical(kind, value, unit), unit)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-6)
