"""Renal function and antithrombotic hold periods before a high-bleeding-risk spine procedure.

SIR 2019 Part II keys the DOAC/fondaparinux rows on creatinine clearance (Cockcroft–Gault, mL/min), not on
eGFR per 1.73 m² (terminology.md §3). Order of sources: a measured/reported CrCl (LOINC 35591-7), else
Cockcroft–Gault from creatinine + age + weight + sex, else eGFR — which is shown with a caveat and never
used to pick the short hold — else unknown, which also means the longer hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fhir_mappings.facts import ClinicalFacts, Evidence
from hooks.common import fmt_date
from hooks.policy import Policy


@dataclass(frozen=True, slots=True)
class Renal:
    crcl: float | None  # mL/min, None when not known
    basis: str  # how it was obtained, for the card
    evidence: tuple[Evidence, ...]
    egfr: float | None = None  # set when only an eGFR was available

    @property
    def egfr_only(self) -> bool:
        return self.crcl is None and self.egfr is not None


def cockcroft_gault(age: float, weight_kg: float, creatinine_mg_dl: float, female: bool) -> float:
    """Creatinine clearance in mL/min: (140 − age) × weight / (72 × SCr), × 0.85 for women."""
    crcl = (140.0 - age) * weight_kg / (72.0 * creatinine_mg_dl)
    return crcl * 0.85 if female else crcl


def renal_function(facts: ClinicalFacts, now: datetime, policy: Policy) -> Renal:
    since = now - timedelta(days=policy.value("renal_window_days"))
    measured = facts.latest("crcl", since=since, until=now)
    if measured is not None and measured.value is not None:
        return Renal(
            measured.value,
            f"creatinine clearance {measured.value:.0f} mL/min on {fmt_date(measured.time)}",
            (measured.evidence,),
        )
    creat = facts.latest("creatinine", since=since, until=now)
    weight = facts.latest("weight", since=now - timedelta(days=policy.value("weight_window_days")), until=now)
    patient = facts.patient
    age = patient.age_years(now) if patient else None
    if (
        creat is not None
        and creat.value
        and weight is not None
        and weight.value
        and age is not None
        and patient is not None
        and patient.sex in ("male", "female")  # the formula has no factor for other/unknown sex
    ):
        crcl = cockcroft_gault(age, weight.value, creat.value, patient.sex == "female")
        return Renal(
            crcl,
            (
                f"Cockcroft–Gault estimate {crcl:.0f} mL/min (creatinine {creat.value:g} mg/dL on "
                f"{fmt_date(creat.time)}, weight {weight.value:g} kg, age {age:.0f}, {patient.sex})"
            ),
            (creat.evidence, weight.evidence, patient.evidence),
        )
    egfr = facts.latest("egfr", since=since, until=now)
    if egfr is not None and egfr.value is not None:
        return Renal(
            None,
            (
                f"only an eGFR is available ({egfr.value:.0f} mL/min/1.73 m² on {fmt_date(egfr.time)}); "
                "hold periods are defined by creatinine clearance"
            ),
            (egfr.evidence,),
            egfr=egfr.value,
        )
    return Renal(None, "no recent creatinine clearance, creatinine with weight, or eGFR on file", ())


@dataclass(frozen=True, slots=True)
class Hold:
    ingredient: str
    days: float | None  # None: the agent is not in the policy table
    reason: str
    note: str
    normal_days: float | None = None  # shown next to the longer hold when renal data are missing/eGFR-only

    @property
    def hours(self) -> float | None:
        return None if self.days is None else self.days * 24.0


def hold_for(policy: Policy, ingredient: str, renal: Renal) -> Hold:
    rule = policy.hold(ingredient)
    if rule is None:
        return Hold(ingredient, None, "no hold period for this agent in the institutional policy", "")
    if rule.days_reduced_renal is not None and rule.crcl_cutoff is not None and renal.egfr_only:
        # eGFR is normalised to 1.73 m² and overestimates CrCl in small older patients — the typical VA
        # patient — so it is not trusted to pick the short hold.
        return Hold(
            ingredient,
            rule.days_reduced_renal,
            f"only eGFR available ({renal.egfr:.0f} mL/min/1.73 m²): longer hold applied",
            rule.note,
            normal_days=rule.days,
        )
    days, reason = rule.hold_days(renal.crcl)
    normal = rule.days if renal.crcl is None and rule.days_reduced_renal is not None else None
    return Hold(ingredient, days, reason, rule.note, normal_days=normal)


def fmt_days(days: float) -> str:
    if days < 1:
        return f"{days * 24:g} h"
    return f"{days:g} day" + ("" if days == 1 else "s")
