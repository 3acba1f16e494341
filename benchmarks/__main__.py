"""`python -m benchmarks [--quick] [--only CASE ...] [--peer] [--results-dir DIR]`.

Runs the cases, prints every figure (ratios and percentiles measured in this run) and writes
`benchmarks/results/latest.json` + `latest.md` after a full run. A partial run (`--quick` or `--only`)
writes `last-partial.json/.md` instead, so the recorded figures always come from one complete run.
Exit status: 0 when every case ran (targets met or not — targets are reported, not asserted), 1 when a
case failed to run.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks.budget import case_budget
from benchmarks.cases import Config, case_fetch, case_floor, case_http, case_peer, case_scaling
from benchmarks.memory_cost import case_memory
from benchmarks.report import RESULTS, CaseResult, machine_info, write_results
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
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    cfg = Config.quick_config() if args.quick else Config()
    selected = args.only or list(CASES)
    runners: dict[str, Callable[[], CaseResult]] = {
        "floor": lambda: case_floor(cfg),
        "http": lambda: case_http(cfg),
        "fetch": lambda: case_fetch(cfg),
        "scaling": lambda: case_scaling(cfg),
        "workers": lambda: case_workers(cfg),
        "peer": lambda: case_peer(cfg, args.peer or (args.only is not None and "peer" in args.only)),
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
    machine = machine_info()
    print(
        f"va-cds benchmarks — {machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['date']}, load average {machine['load_average_at_start']}"
        + (" — QUICK (few repetitions: figures are indicative only)" if args.quick else ""),
        flush=True,
    )
    results: list[CaseResult] = []
    failed = False
    for name in CASES:
        if name not in selected:
            continue
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        try:
            result = runners[name]()
        except Exception as exc:
            failed = True
            traceback.print_exc()
            result = CaseResult(name, name, status="failed", reason=f"{type(exc).__name__}: {exc}")
            result.lines.append(f"{name}: FAILED: {result.reason}")
        result.data["wall_s"] = round(time.perf_counter() - t0, 2)
        for line in result.lines:
            print(line, flush=True)
        for target in result.targets:
            print(target.line(), flush=True)
        results.append(result)
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
