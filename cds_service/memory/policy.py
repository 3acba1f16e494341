"""The `memory:` block of policy.yaml: alert-memory windows, the patient-view switch, per-rule off.

Read from the same file as the clinical policy (`hooks.policy`), and as strictly: a malformed key stops
start-up with a `PolicyError` naming it. A policy file without the block (written before alert memory
existed) gets the documented defaults below, and start-up says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hooks.policy import PolicyError

log = logging.getLogger("va_cds.memory")

DEFAULT_SOURCE = "va-cds default (policy file has no memory block)"
#: Largest `max_calls` accepted: it bounds a lookup's cost, so "unbounded" is not a value it takes.
MAX_CALLS_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class MemorySetting:
    value: float | bool
    unit: str
    source: str


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """Alert-memory policy. Windows are measured back from the current call's time."""

    enabled: bool = True
    override_memory_days: float = 30.0
    accepted_memory_days: float = 30.0
    repeat_memory_hours: float = 24.0
    omit_overridden_on_patient_view: bool = False
    #: the most recent calls of a chart one lookup reads (inside the window): bounds its cost on a busy chart
    max_calls: int = 200
    #: rule id → why memory is off for it (its cards always come back in full)
    rules_off: dict[str, str] = field(default_factory=dict)
    #: every setting with its unit and source, for the rule pages
    settings: dict[str, MemorySetting] = field(default_factory=dict)

    def applies_to(self, rule_id: str) -> bool:
        return self.enabled and rule_id not in self.rules_off

    @property
    def lookback_days(self) -> float:
        """How far back one lookup must read to serve every window."""
        return max(self.override_memory_days, self.accepted_memory_days, self.repeat_memory_hours / 24)


_NUMBERS = {
    "override_memory_days": ("d", 30.0),
    "accepted_memory_days": ("d", 30.0),
    "repeat_memory_hours": ("h", 24.0),
    "max_calls": ("calls", 200.0),
}
_SWITCHES = {"enabled": True, "omit_overridden_on_patient_view": False}
_KNOWN = {*_NUMBERS, *_SWITCHES, "rules_off"}


def _entry(raw: Any, key: str) -> tuple[Any, str, str]:
    where = f"memory.{key}"
    if not isinstance(raw, dict) or "value" not in raw or "source" not in raw:
        raise PolicyError(f"policy key '{where}': expected a mapping with value and source")
    source = raw["source"]
    if not isinstance(source, str) or not source.strip():
        raise PolicyError(f"policy key '{where}': source must be non-empty text")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise PolicyError(f"policy key '{where}': unit must be text")
    return raw["value"], unit, source


def parse_memory_policy(doc: Any) -> MemoryPolicy:
    """The memory policy from a parsed policy document (its `memory` block; defaults if absent)."""
    block = doc.get("memory", {}) if isinstance(doc, dict) else {}
    if not isinstance(block, dict):
        raise PolicyError("policy key 'memory': must be a mapping")
    unknown = sorted(str(k) for k in block if k not in _KNOWN)
    if unknown:
        raise PolicyError(f"policy key 'memory.{unknown[0]}': not a memory setting (known: {sorted(_KNOWN)})")
    settings: dict[str, MemorySetting] = {}
    numbers: dict[str, float] = {}
    for key, (unit, default) in _NUMBERS.items():
        if key not in block:
            settings[key] = MemorySetting(default, unit, DEFAULT_SOURCE)
            numbers[key] = default
            continue
        value, given_unit, source = _entry(block[key], key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PolicyError(
                f"policy key 'memory.{key}': value must be a non-negative number, got {value!r}"
            )
        if given_unit and given_unit != unit:
            raise PolicyError(f"policy key 'memory.{key}': unit must be '{unit}', got {given_unit!r}")
        if key == "max_calls" and (value < 1 or value > MAX_CALLS_LIMIT or value != int(value)):
            raise PolicyError(
                f"policy key 'memory.max_calls': value must be a whole number from 1 to {MAX_CALLS_LIMIT:,}, "
                f"got {value!r}"
            )
        settings[key] = MemorySetting(float(value), unit, source)
        numbers[key] = float(value)
    switches: dict[str, bool] = {}
    for key, default in _SWITCHES.items():
        if key not in block:
            settings[key] = MemorySetting(default, "", DEFAULT_SOURCE)
            switches[key] = default
            continue
        value, _unit, source = _entry(block[key], key)
        if not isinstance(value, bool):
            raise PolicyError(f"policy key 'memory.{key}': value must be true or false, got {value!r}")
        settings[key] = MemorySetting(value, "", source)
        switches[key] = value
    rules_off_raw = block.get("rules_off") or {}
    if not isinstance(rules_off_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in rules_off_raw.items()
    ):
        raise PolicyError("policy key 'memory.rules_off': expected a mapping of rule id → reason (text)")
    return MemoryPolicy(
        enabled=switches["enabled"],
        override_memory_days=numbers["override_memory_days"],
        accepted_memory_days=numbers["accepted_memory_days"],
        repeat_memory_hours=numbers["repeat_memory_hours"],
        omit_overridden_on_patient_view=switches["omit_overridden_on_patient_view"],
        max_calls=int(numbers["max_calls"]),
        rules_off={k: v.strip() for k, v in rules_off_raw.items()},
        settings=settings,
    )


def load_memory_policy(path: str | Path) -> MemoryPolicy:
    """The memory policy of the policy file at `path` (already checked by `hooks.policy.load_policy`)."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"policy file {path}: cannot be read for its memory block ({exc})") from exc
    if isinstance(doc, dict) and "memory" not in doc:
        log.warning("policy file %s has no 'memory:' block: alert memory uses its documented defaults", path)
    return parse_memory_policy(doc)
