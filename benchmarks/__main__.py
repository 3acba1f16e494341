"""`python -m benchmarks [--quick] [--only CASE ...] [--peer] [--results-dir DIR]`.

Runs the cases, prints every figure (ratios and percentiles measured in this run) and writes
`benchmarks/results/latest.json` + `latest.md` after a full run. A partial run (`--quick` or `--only`)
writes `last-partial.json/.md` instead, so the recorded figures always come from one complete run.
Exit status: 0 when every case ran (targets met or not — targets are reported, not asserted), 1 when a
case failed to run.

When more than one case runs, each runs in a fresh interpreter (`--child-out`, internal): measured, an
in-process case after others inherited their heap (the alert-memory delta doubled after `floor` and
`fetch` had run in the same process), so a case's figures depended on which cases ran before it. Every
ratio is still measured within its case, in one run.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks.budget import case_budget
from benchmarks.cases import Config, case_fetch, case_floor, case_http, case_peer, case_scaling
from benchmarks.memory_cost import case_memory
from benchmarks.report import RESULTS, ROOT, CaseResult, machine_info, write_results
from benchmarks.workers import case_workers

CASES = ("floor", "http", "fetch", "scaling", "workers", "peer", "budget", "memory")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few repetitions, short load phases (smoke test)")
    p.add_argument("--only", action="append", choices=CASES, metavar="CASE", help=f"run only CASE {CASES}")
    p.add_argument(
        "--peer", action="store_true", help="run the HealthChain case (installs it in its own venv)"
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where latest.json/.md go")
    # Internal: run the one --only case here and pickle its CaseResult to this path (see the docstring).
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p


def _isolated(name: str, quick: bool, peer: bool) -> CaseResult:
    """Run case `name` in a fresh interpreter; its output streams through, its result comes back."""
    with tempfile.TemporaryDirectory(prefix="va-cds-bench-case-") as tmp:
        out = Path(tmp) / "result.pickle"
        argv = [sys.executable, "-m", "benchmarks", "--only", name, "--child-out", str(out)]
        argv += ["--quick"] if quick else []
        argv += ["--peer"] if peer else []
        code = subprocess.run(argv, cwd=ROOT, check=False).returncode
        if out.exists():
            result = pickle.loads(out.read_bytes())
            assert isinstance(result, CaseResult)
            return result
    reason = f"the case's interpreter exited with status {code} and no result"
    return CaseResult(name, name, status="failed", reason=reason, lines=[f"{name}: FAILED: {reason}"])


def _in_process(name: str, runner: Callable[[], CaseResult]) -> CaseResult:
    """Run one case here; print its figure lines and targets as they are known."""
    t0 = time.perf_counter()
    try:
        result = runner()
    except Exception as exc:
        traceback.print_exc()
        result = CaseResult(name, name, status="failed", reason=f"{type(exc).__name__}: {exc}")
        result.lines.append(f"{name}: FAILED: {result.reason}")
    result.data["wall_s"] = round(time.perf_counter() - t0, 2)
    result.data["pid"] = os.getpid()  # which interpreter measured it (one per case when several run)
    for line in result.lines:
        print(line, flush=True)
    for target in result.targets:
        print(target.line(), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    cfg = Config.quick_config() if args.quick else Config()
    selected = args.only or list(CASES)
    # `--only peer` asks for the peer case; a case's own interpreter is told by --peer alone.
    peer = args.peer or (args.child_out is None and args.only is not None and "peer" in args.only)
    runners: dict[str, Callable[[], CaseResult]] = {
        "floor": lambda: case_floor(cfg),
        "http": lambda: case_http(cfg),
        "fetch": lambda: case_fetch(cfg),
        "scaling": lambda: case_scaling(cfg),
        "workers": lambda: case_workers(cfg),
        "peer": lambda: case_peer(cfg, peer),
        "budget": lambda: case_budget(cfg.quick),
        "memory": lambda: case_memory(
            cfg.memory_reps,
            cfg.floor_warmup,
            cfg.memory_history,
            cfg.memory_patients,
            cfg.budget_s,
            cfg.http_body_resources,
        ),
    }
    if args.child_out is not None:
        (name,) = selected
        result = _in_process(name, runners[name])
        args.child_out.write_bytes(pickle.dumps(result))
        return 0 if result.status != "failed" else 1
    machine = machine_info()
    print(
        f"va-cds benchmarks — {machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['date']}, load average {machine['load_average_at_start']}"
        + (" — QUICK (few repetitions: figures are indicative only)" if args.quick else ""),
        flush=True,
    )
    results: list[CaseResult] = []
    isolate = len(selected) > 1
    for name in CASES:
        if name not in selected:
            continue
        print(f"\n== {name} ==", flush=True)
        result = _isolated(name, args.quick, peer) if isolate else _in_process(name, runners[name])
        results.append(result)
    failed = any(r.status == "failed" for r in results)
    full = not args.quick and args.only is None
    stem = "latest" if full else "last-partial"
    json_path, md_path = write_results(args.results_dir, stem, machine, results, argv)
    print("\n== summary ==")
    for r in results:
        if r.status != "ok":
            print(f"{r.name}: {r.status}: {r.reason}")
        for t in r.targets:
            print(t.line())
    print(f"\nwritten: {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
