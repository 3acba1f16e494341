"""Unit normalisation: every measurement kind to its one canonical unit (facts.CANONICAL_UNITS).

`valueQuantity.code` (UCUM) is read first, then the free-text `unit` (lenient: "°F", "g/dl", "K/uL",
"x10^9/L"...). Every conversion is linear (canonical = value × factor + offset) and therefore invertible, so
tests can round-trip. A unit that is not listed for the kind is never guessed: `UnitError` is raised and the
extractor records the measurement as unusable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .facts import CANONICAL_UNITS


class UnitError(ValueError):
    """The unit is not known for this kind (the value must not be used)."""


@dataclass(frozen=True, slots=True)
class Conversion:
    factor: float
    offset: float = 0.0

    def to_canonical(self, value: float) -> float:
        return value * self.factor + self.offset

    def from_canonical(self, value: float) -> float:
        return (value - self.offset) / self.factor


_ID = Conversion(1.0)
_PER_UL_TO_10_9_L = Conversion(0.001)  # 250000 /uL = 250 10*9/L
_COUNT_UNITS = {
    "10*9/l": _ID,
    "10*3/ul": _ID,
    "10*3/mm3": _ID,
    "10^9/l": _ID,
    "10^3/ul": _ID,
    "10^3/mm3": _ID,
    "x10*9/l": _ID,
    "x10*3/ul": _ID,
    "x10^9/l": _ID,
    "x10^3/ul": _ID,
    "x10e9/l": _ID,
    "x10e3/ul": _ID,
    "10e9/l": _ID,
    "10e3/ul": _ID,
    "k/ul": _ID,
    "k/mm3": _ID,
    "k/mcl": _ID,
    "thou/ul": _ID,
    "thou/mm3": _ID,
    "thousand/ul": _ID,
    "/nl": _ID,
    "10*3/mcl": _ID,
    "/ul": _PER_UL_TO_10_9_L,
    "/mm3": _PER_UL_TO_10_9_L,
    "/mcl": _PER_UL_TO_10_9_L,
    "cells/ul": _PER_UL_TO_10_9_L,
    "cells/mm3": _PER_UL_TO_10_9_L,
    "{cells}/ul": _PER_UL_TO_10_9_L,
    "10*6/l": _PER_UL_TO_10_9_L,
}
_HGB_MMOL_PER_GDL = 0.6206  # g/dL = mmol/L ÷ 0.6206
_LB = 0.45359237

# Lenient unit keys (see _norm) per kind.
UNITS: dict[str, dict[str, Conversion]] = {
    "inr": {"{inr}": _ID, "1": _ID, "": _ID, "{ratio}": _ID, "ratio": _ID, "inr": _ID, "{index}": _ID},
    "platelets": dict(_COUNT_UNITS),
    "wbc": dict(_COUNT_UNITS),
    "hemoglobin": {
        "g/dl": _ID,
        "g/l": Conversion(0.1),
        "mg/dl": Conversion(0.001),
        "mmol/l": Conversion(1 / _HGB_MMOL_PER_GDL),
    },
    "crp": {"mg/l": _ID, "ug/ml": _ID, "mcg/ml": _ID, "mg/dl": Conversion(10.0)},
    "esr": {"mm/h": _ID, "mm/hr": _ID, "mm/[hr]": _ID, "mm/hour": _ID, "mm/1h": _ID, "mm/(1.h)": _ID},
    "temperature": {
        "cel": _ID,
        "[degc]": _ID,
        "degc": _ID,
        "°c": _ID,
        "c": _ID,
        "celsius": _ID,
        "[degf]": Conversion(5 / 9, -32 * 5 / 9),
        "degf": Conversion(5 / 9, -32 * 5 / 9),
        "°f": Conversion(5 / 9, -32 * 5 / 9),
        "f": Conversion(5 / 9, -32 * 5 / 9),
        "fahrenheit": Conversion(5 / 9, -32 * 5 / 9),
        "k": Conversion(1.0, -273.15),
    },
    "heart_rate": {
        "/min": _ID,
        "1/min": _ID,
        "{beats}/min": _ID,
        "{beat}/min": _ID,
        "beats/min": _ID,
        "beat/min": _ID,
        "bpm": _ID,
        "/minute": _ID,
    },
    "resp_rate": {
        "/min": _ID,
        "1/min": _ID,
        "{breaths}/min": _ID,
        "{breath}/min": _ID,
        "breaths/min": _ID,
        "{resp}/min": _ID,
        "/minute": _ID,
    },
    "spo2": {"%": _ID, "percent": _ID, "%{oxygen}": _ID},
    "systolic_bp": {"mm[hg]": _ID, "mmhg": _ID, "kpa": Conversion(7.500617)},
    "diastolic_bp": {"mm[hg]": _ID, "mmhg": _ID, "kpa": Conversion(7.500617)},
    "hba1c": {
        "%": _ID,
        "%{hb}": _ID,
        "%{hba1c}": _ID,
        "%{total}": _ID,
        "percent": _ID,
        "mmol/mol": Conversion(0.09148, 2.152),  # NGSP % = 0.09148 × IFCC + 2.152
        "mmol/mol{hb}": Conversion(0.09148, 2.152),
    },
    "glucose": {"mg/dl": _ID, "mmol/l": Conversion(18.0)},
    "creatinine": {"mg/dl": _ID, "umol/l": Conversion(1 / 88.4), "mmol/l": Conversion(1000 / 88.4)},
    "egfr": {
        "ml/min/{1.73_m2}": _ID,
        "ml/min/1.73m2": _ID,
        "ml/min/{1.73m2}": _ID,
        "ml/min/1.73_m2": _ID,
        "ml/min/1.73m^2": _ID,
        "ml/min/1.73m*2": _ID,
        "ml/min/[1.73_m2]": _ID,
        "ml/min/1.73": _ID,
    },
    "crcl": {"ml/min": _ID, "ml/s": Conversion(60.0)},
    "pain": {
        "{score}": _ID,
        "score": _ID,
        "(score)": _ID,
        "1": _ID,
        "": _ID,
        "/10": _ID,
        "{#}": _ID,
        "{0-10}": _ID,
    },
    "tryptase": {"ug/l": _ID, "ng/ml": _ID, "mcg/l": _ID},
    "weight": {
        "kg": _ID,
        "g": Conversion(0.001),
        "[lb_av]": Conversion(_LB),
        "lb": Conversion(_LB),
        "lbs": Conversion(_LB),
        "[oz_av]": Conversion(_LB / 16),
    },
    "blood_culture": {},
}

# Kinds whose canonical unit may legitimately be absent in the source (dimensionless scores and ratios).
UNITLESS_OK = frozenset({"inr", "pain"})


@lru_cache(maxsize=4096)  # a record repeats a few unit strings thousands of times; bounded for any input
def _norm(unit: str) -> str:
    """Lenient unit key: case, spaces, micro signs, "^"/"e" exponents and a leading "x" folded."""
    u = unit.strip().lower().replace(" ", "")
    u = u.replace("µ", "u").replace("μ", "u").replace("×", "x").replace("º", "°").replace("^", "*")
    u = u.replace("x10e", "10*").replace("10e", "10*")
    if u.startswith("x10*"):
        u = u[1:]
    return u


# Rebuild the tables keyed by normalised form, so lookup is one dict access.
_TABLE: dict[str, dict[str, Conversion]] = {
    kind: {_norm(k): conv for k, conv in table.items()} for kind, table in UNITS.items()
}


def conversion_for(kind: str, unit: str | None) -> Conversion:
    """The conversion from `unit` to the kind's canonical unit; UnitError when unknown."""
    if kind not in CANONICAL_UNITS:
        raise UnitError(f"unknown measurement kind {kind!r}")
    table = _TABLE.get(kind, {})
    key = _norm(unit) if isinstance(unit, str) else ""
    conv = table.get(key)
    if conv is None:
        raise UnitError(f"unknown unit {unit!r} for {kind}" if unit else f"missing unit for {kind}")
    return conv


def to_canonical(kind: str, value: float, unit: str | None) -> float:
    """`value` in `unit` expressed in CANONICAL_UNITS[kind]."""
    if not math.isfinite(value):
        raise UnitError(f"non-finite value {value!r}")
    return conversion_for(kind, unit).to_canonical(value)


def from_canonical(kind: str, value: float, unit: str | None) -> float:
    """Inverse of to_canonical (used for round-trip tests and for displaying a value in a local unit)."""
    return conversion_for(kind, unit).from_canonical(value)


def normalize_quantity(kind: str, value: float, code: str | None, unit_text: str | None) -> float:
    """Read the UCUM `code` first, then the display `unit`; raise UnitError if neither is known."""
    first_error: UnitError | None = None
    for candidate in (code, unit_text):
        if isinstance(candidate, str) and candidate.strip():
            try:
                return to_canonical(kind, value, candidate)
            except UnitError as exc:
                first_error = first_error or exc
    if first_error is not None:
        raise first_error
    if kind in UNITLESS_OK:
        return to_canonical(kind, value, "")
    raise UnitError(f"missing unit for {kind}")
