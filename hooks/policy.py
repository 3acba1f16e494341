"""Institutional policy: thresholds, windows and antithrombotic hold periods, loaded once at start-up.

The packaged `policy.yaml` holds the defaults with their sources; an institution points
`VA_CDS_POLICY_FILE` at its own copy. Anything malformed stops start-up with `PolicyError` naming the key,
because a silently defaulted threshold is a clinical hazard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")

REQUIRED_THRESHOLDS = (
    "inr_max",
    "platelets_min",
    "coag_lab_window_days",
    "inr_window_on_warfarin_days",
    "fever_celsius",
    "fever_window_hours",
    "infection_lab_window_days",
    "blood_culture_window_days",
    "imaging_window_weeks",
    "hba1c_max_percent",
    "glucose_max_mg_dl",
    "glycemic_window_days",
    "renal_window_days",
    "weight_window_days",
    "post_lookback_days",
    "resp_rate_max",
    "heart_rate_max",
    "systolic_bp_min",
    "hemoglobin_drop_g_dl",
    "pain_rise_points",
    "wbc_max",
    "crp_max_mg_l",
    "esr_max_mm_h",
    "zoledronic_interval_months",
    "denosumab_interval_months",
    "dxa_interval_years",
    "discharge_recent_va_days",
    # pre-procedure, catalog v2 (issue 14)
    "imminent_hours",
    "stale_medication_months",
    "neuro_new_days",
    "inr_max_liver",
    "platelets_min_liver",
    "inr_max_explained_vka",
    "pre_crp_card_mg_l",
    "pre_wbc_card",
    "systemic_infection_days",
    "lmwh_prophylactic_enoxaparin_mg_day",
    "lmwh_prophylactic_dalteparin_iu_day",
    "lmwh_prophylactic_hold_hours",
)
# Catalog v2 post-procedure values (V2.6 as amended by V2.12): each a policy key with its source.
POST_V2_THRESHOLDS = (
    "spo2_critical_percent",
    "spo2_hypoxemia_percent",
    "spo2_low_baseline_percent",
    "spo2_drop_low_baseline_points",
    "spo2_drop_points",
    "spo2_baseline_days",
    "post_neuro_recent_days",
    "hb_baseline_days",
    "hb_low_g_dl",
    "pain_severe_score",
    "pain_severe_days",
    "pain_severe_after_hours",
    "tryptase_hours",
    "anaphylaxis_critical_hours",
    "post_result_current_hours",
)
REQUIRED_WINDOWS = (
    "post.pce.suspected",
    "post.neuro.deficit",
    "post.infection.suspected",
    "post.hemorrhage.suspected",
    "post.pleural.suspected",
    "post.pain.increased",
    "post.fracture.adjacent",
    "post.hypersensitivity",
    "post.bone-health.untreated",
    "post.followup",
)


class PolicyError(ValueError):
    """The policy file is unusable; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class PolicyValue:
    value: float
    unit: str
    source: str


@dataclass(frozen=True, slots=True)
class HoldRule:
    """How long to withhold one antithrombotic before a high-bleeding-risk procedure."""

    ingredient: str
    days: float
    days_reduced_renal: float | None  # None: no renal split
    crcl_cutoff: float | None  # mL/min; CrCl below it → days_reduced_renal
    note: str

    def hold_days(self, crcl: float | None) -> tuple[float, str]:
        """The hold period and why: renal function unknown → the longer hold (never the short one)."""
        if self.days_reduced_renal is None or self.crcl_cutoff is None:
            return self.days, "no renal adjustment"
        if crcl is None:
            return self.days_reduced_renal, "renal function unknown: longer hold applied"
        if crcl < self.crcl_cutoff:
            return self.days_reduced_renal, f"CrCl {crcl:.0f} mL/min < {self.crcl_cutoff:.0f}"
        return self.days, f"CrCl {crcl:.0f} mL/min ≥ {self.crcl_cutoff:.0f}"


@dataclass(frozen=True, slots=True)
class Policy:
    thresholds: dict[str, PolicyValue]
    windows_days: dict[str, PolicyValue]
    holds: dict[str, HoldRule]
    holds_source: str
    path: str

    def value(self, key: str) -> float:
        return self.thresholds[key].value

    def window_days(self, rule_id: str) -> float:
        return self.windows_days[rule_id].value

    def hold(self, ingredient: str) -> HoldRule | None:
        return self.holds.get(ingredient)


def _number(raw: Any, key: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PolicyError(f"policy key '{key}': value must be a number, got {raw!r}")
    if raw < 0:
        raise PolicyError(f"policy key '{key}': value must not be negative, got {raw!r}")
    return float(raw)


def _entry(raw: Any, key: str) -> PolicyValue:
    if not isinstance(raw, dict):
        raise PolicyError(f"policy key '{key}': expected a mapping with value, unit and source")
    for part in ("value", "unit", "source"):
        if part not in raw:
            raise PolicyError(f"policy key '{key}': missing '{part}'")
    if not isinstance(raw["unit"], str) or not isinstance(raw["source"], str) or not raw["source"].strip():
        raise PolicyError(f"policy key '{key}': unit and source must be non-empty text")
    return PolicyValue(value=_number(raw["value"], key), unit=raw["unit"], source=raw["source"])


def _section(doc: dict[str, Any], name: str, required: tuple[str, ...]) -> dict[str, PolicyValue]:
    raw = doc.get(name)
    if not isinstance(raw, dict):
        raise PolicyError(f"policy key '{name}': missing or not a mapping")
    out = {str(k): _entry(v, f"{name}.{k}") for k, v in raw.items()}
    for key in required:
        if key not in out:
            raise PolicyError(f"policy key '{name}.{key}': missing")
    return out


def _holds(doc: dict[str, Any]) -> tuple[dict[str, HoldRule], str]:
    raw = doc.get("antithrombotic_holds")
    if not isinstance(raw, dict) or not isinstance(raw.get("agents"), dict):
        raise PolicyError("policy key 'antithrombotic_holds.agents': missing or not a mapping")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise PolicyError("policy key 'antithrombotic_holds.source': missing")
    holds: dict[str, HoldRule] = {}
    for name, row in raw["agents"].items():
        key = f"antithrombotic_holds.agents.{name}"
        if not isinstance(row, dict) or "days" not in row:
            raise PolicyError(f"policy key '{key}': needs at least 'days'")
        reduced = row.get("days_reduced_renal")
        cutoff = row.get("crcl_cutoff")
        if (reduced is None) != (cutoff is None):
            raise PolicyError(f"policy key '{key}': days_reduced_renal and crcl_cutoff go together")
        holds[str(name)] = HoldRule(
            ingredient=str(name),
            days=_number(row["days"], f"{key}.days"),
            days_reduced_renal=None if reduced is None else _number(reduced, f"{key}.days_reduced_renal"),
            crcl_cutoff=None if cutoff is None else _number(cutoff, f"{key}.crcl_cutoff"),
            note=str(row.get("note") or ""),
        )
    return holds, source


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and check a policy file (the packaged default when `path` is None)."""
    file = Path(path) if path else DEFAULT_POLICY_FILE
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"policy file {file}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {file}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise PolicyError(f"policy file {file}: top level must be a mapping")
    holds, holds_source = _holds(doc)
    return Policy(
        thresholds=_section(doc, "thresholds", (*REQUIRED_THRESHOLDS, *POST_V2_THRESHOLDS)),
        windows_days=_section(doc, "windows_days", REQUIRED_WINDOWS),
        holds=holds,
        holds_source=holds_source,
        path=str(file),
    )
