"""Smoke test of the benchmark harness: it runs and prints its ratios. No timing thresholds here —
speed is shown by `python -m benchmarks`, never asserted by a test on a shared machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *cases: str, timeout: float = 110) -> str:
    """`python -m benchmarks --quick --only CASE …` into tmp_path; its stdout, once it exited 0."""
    only = [arg for case in cases for arg in ("--only", case)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *only, "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_quick_floor_case_runs_and_prints_ratios(tmp_path: Path) -> None:
    out = _bench(tmp_path, "floor")
    assert "floor: ours / parse floor = " in out
    assert "floor: naive / ours = " in out
    assert "(target ≤ 3" in out and "(target ≥ 10" in out
    doc = json.loads((tmp_path / "last-partial.json").read_text(encoding="utf-8"))
    floor = doc["cases"]["floor"]
    assert floor["status"] == "ok"
    assert {t["name"] for t in floor["targets"]} == {"floor: ours / parse floor", "floor: naive / ours"}
    assert doc["machine"]["cores"] and doc["machine"]["python"]
    assert (tmp_path / "last-partial.md").read_text(encoding="utf-8").startswith("# va-cds benchmark")


def test_several_cases_each_run_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """Cases run together must not inherit each other's heap (it doubled the memory case's delta)."""
    out = _bench(tmp_path, "floor", "fetch", timeout=200)
    assert "floor: naive / ours = " in out and "fetch: whole request / slowest" in out
    doc = json.loads((tmp_path / "last-partial.json").read_text(encoding="utf-8"))
    floor, fetch = doc["cases"]["floor"], doc["cases"]["fetch"]
    assert floor["status"] == fetch["status"] == "ok"
    assert floor["figures"]["pid"] != fetch["figures"]["pid"], "each case in its own interpreter"


def test_quick_workers_case_runs_and_reports_its_targets(tmp_path: Path) -> None:
    """The `workers` case end to end in quick mode: 1 and 2 workers (and the floor), signed tokens and the
    shared replay table on SQLite (and PostgreSQL where a server can start). Figures are not judged."""
    out = _bench(tmp_path, "workers")
    assert "workers: throughput 2 workers / 1 worker: va-cds " in out
    assert "workers: throughput va-cds / floor: 1 worker " in out
    assert "replay claim (one committed INSERT … ON CONFLICT on sqlite" in out
    doc = json.loads((tmp_path / "last-partial.json").read_text(encoding="utf-8"))
    case = doc["cases"]["workers"]
    assert case["status"] == "ok"
    names = {t["name"] for t in case["targets"]}
    assert "workers: va-cds throughput, 2 workers / 1 worker" in names
    assert "workers: p99 at 100 req/s, jti on SQLite" in names
    sat = case["figures"]["saturation"]
    assert set(sat) == {"va-cds 1w", "va-cds 2w", "floor 1w", "floor 2w"}
    assert all(d["ok"] > 0 for d in sat.values())
