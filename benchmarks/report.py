"""Results: machine description, printed figure lines, latest.json and the latest.md table."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("fastapi", "starlette", "uvicorn", "pydantic", "orjson", "httpx", "fhir.resources"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_start": load_average(),
        "packages": versions,
    }


@dataclass(slots=True)
class Target:
    name: str
    value: float
    limit: float
    kind: str  # "max": value <= limit; "min": value >= limit
    unit: str = "×"

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def line(self) -> str:
        op = "≤" if self.kind == "max" else "≥"
        return (
            f"{self.name} = {fmt(self.value)}{self.unit}  (target {op} {fmt(self.limit)}{self.unit})  "
            f"{'MET' if self.met else 'NOT MET'}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if math.isnan(self.value) else round(self.value, 4),
            "target": f"{'<=' if self.kind == 'max' else '>='} {self.limit:g}",
            "unit": self.unit,
            "met": self.met,
        }


@dataclass(slots=True)
class CaseResult:
    name: str
    title: str
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    table: list[tuple[str, str]] = field(default_factory=list)  # (figure, value) rows for latest.md

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "targets": [t.as_dict() for t in self.targets],
            "figures": self.data,
        }


def fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def write_results(
    directory: Path, stem: str, machine: dict[str, Any], cases: list[CaseResult], argv: list[str]
) -> tuple[Path, Path]:
    import orjson

    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": {**machine, "load_average_at_end": load_average()},
        "command": "python -m benchmarks " + " ".join(argv),
        "cases": {c.name: c.as_dict() for c in cases},
    }
    json_path = directory / f"{stem}.json"
    json_path.write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    md_path = directory / f"{stem}.md"
    md_path.write_text(_markdown(doc, cases), encoding="utf-8")
    return json_path, md_path


def _markdown(doc: dict[str, Any], cases: list[CaseResult]) -> str:
    m = doc["machine"]
    out = [
        "# va-cds benchmark results (latest run)",
        "",
        f"Command: `{doc['command'].strip()}` — every figure below was measured in this one run.",
        "",
        "| Machine | |",
        "|---|---|",
        f"| Date (UTC) | {m['date']} |",
        f"| CPU | {m['cpu_model']} |",
        f"| Cores | {m['cores']} (usable: {m['cores_usable']}) |",
        f"| Python | {m['python']} ({m['implementation']}) on {m['platform']} |",
        f"| Commit | {m['git_commit']}{' (uncommitted changes)' if m['git_dirty'] else ''} |",
        f"| Load average (1/5/15 min) | start {m['load_average_at_start']}, end {m['load_average_at_end']} |",
        "| Packages | " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + " |",
        "",
        "## Targets",
        "",
        "| Case | Figure | Value | Target | Met |",
        "|---|---|---|---|---|",
    ]
    for c in cases:
        if c.status != "ok" and not c.targets:
            out.append(f"| {c.name} | {c.status}: {c.reason} | | | |")
        for t in c.targets:
            value = fmt(t.value) + t.unit
            op = "≤" if t.kind == "max" else "≥"
            met = "yes" if t.met else "**no**"
            out.append(f"| {c.name} | {t.name} | {value} | {op} {fmt(t.limit)}{t.unit} | {met} |")
    for c in cases:
        out += ["", f"## {c.name}: {c.title}", ""]
        if c.status != "ok":
            out += [f"**{c.status}**: {c.reason}", ""]
        if c.table:
            out += ["| Figure | Value |", "|---|---|"]
            out += [f"| {k} | {v} |" for k, v in c.table]
            out.append("")
        if c.lines:
            out += ["```", *c.lines, "```"]
    return "\n".join(out) + "\n"
