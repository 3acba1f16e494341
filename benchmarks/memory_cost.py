"""Case `memory`: what alert memory adds to a hook response (issue 19; target: p50 grows ≤ 1 ms).

Two apps built alike, in-process through the ASGI interface (httpx.ASGITransport), each on its own SQLite
file: one with a stable patient hash key (memory on), one without (memory off, the only difference). The
same 100-resource order-sign (the `http` case's body) goes to both, interleaved, order rotated each round.

Both databases first get the same history for each of `patients` patients (the same record under new
patient ids): `history` earlier calls each, every warning of the first one overridden and every
suggestion accepted. The measured calls go round the patients, so each does the whole of memory's work —
the indexed lookup (on the event loop for SQLite, as in production), demoting the overridden warnings,
withholding the accepted orders — on a busy chart (a few dozen calls in the window), and adds to it.

Two timings, each interleaved:

* **paced** (the target): calls 10 ms apart, as in the `http` case's 100 req/s phase, so each arrives
  after the previous call's audit rows are written, as they are in service below saturation;
* **back to back**: the next call starts the moment the previous answer is out, while the writer thread
  is still writing its audit rows. The lookup's SQLite read releases the GIL, and getting it back from
  the busy writer thread can take up to the interpreter's switch interval (5 ms): this shows what that
  contention costs at saturation.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from benchmarks import data
from benchmarks.report import CaseResult, Target, fmt
from benchmarks.stats import interleaved, summarize
from cds_service.app import create_app
from cds_service.gc_tuning import settle_heap
from cds_service.settings import Settings

_HOOK_INSTANCE = b"HOOK-INSTANCE"
#: Spacing of the paced calls: 100 req/s, the `http` case's fixed rate.
PACE_S = 0.010


def _patients(request: dict[str, Any], n: int) -> list[bytes]:
    """The same request for `n` patients: the patient id replaced everywhere (context, Patient, subjects).

    (The record's death date is already left out by `benchmarks.data`, so the rules run and memory has cards.)
    """
    pid = str(request["context"]["patientId"])
    prefetch = dict(request.get("prefetch") or {})
    raw = orjson.dumps({**request, "prefetch": prefetch, "hookInstance": _HOOK_INSTANCE.decode()})
    return [raw.replace(pid.encode(), str(uuid.uuid4()).encode()) for _ in range(n)]


def _body(template: bytes) -> bytes:
    return template.replace(_HOOK_INSTANCE, str(uuid.uuid4()).encode())


def _feedback_for(cards: list[dict[str, Any]], when: str) -> bytes | None:
    """Every warning overridden, every suggestion accepted (None: nothing to report)."""
    items: list[dict[str, Any]] = []
    for card in cards:
        if card["indicator"] == "warning":
            items.append({"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": when})
        if card.get("suggestions"):
            ids = [{"id": s["uuid"]} for s in card["suggestions"]]
            items.append(
                {
                    "card": card["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": ids,
                    "outcomeTimestamp": when,
                }
            )
    return orjson.dumps({"feedback": items}) if items else None


def case_memory(
    reps: int, warmup: int, history: int, patients: int, budget_s: float, resources: int = 100
) -> CaseResult:
    res = CaseResult("memory", "Alert memory's cost on the 100-resource order-sign (in-process, SQLite)")
    w = data.build_workload(resources)
    path = f"/cds-services/{data.SERVICE_ID}"
    with tempfile.TemporaryDirectory(prefix="va-cds-bench-memory-") as tmp:
        apps = {
            name: create_app(
                Settings(
                    auth_mode="off",
                    database_url=f"sqlite:///{tmp}/{name}.db",
                    log_level="WARNING",
                    patient_hash_key="bench-key" if name == "memory-on" else None,
                )
            )
            for name in ("memory-on", "memory-off")
        }
        loop = asyncio.new_event_loop()
        clients = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://va-cds")
            for name, app in apps.items()
        }

        def post(name: str, url: str, body: bytes) -> dict[str, Any]:
            headers = {"content-type": "application/json"}
            r = loop.run_until_complete(clients[name].post(url, content=body, headers=headers))
            assert r.status_code == 200, r.text
            return dict(r.json())

        def drain(name: str) -> None:
            apps[name].state.va.close_writer()  # every queued audit row written (the writer restarts on use)

        templates = _patients(w.request, patients)
        try:
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            # Both databases get the same history (the only difference between the apps is the key).
            for name in apps:
                for template in templates:
                    first = post(name, path, _body(template))
                    drain(name)
                    feedback = _feedback_for(first["cards"], now)
                    if feedback is not None:
                        post(name, f"{path}/feedback", feedback)
                    for _ in range(history):
                        post(name, path, _body(template))
                drain(name)
            shown = post("memory-on", path, _body(templates[0]))["cards"]
            changed = [c for c in shown if "org.va-cds.memory" in (c.get("extension") or {})]
            turn = {"calls": 0}

            def next_body() -> bytes:
                # The same body to both apps in a round; the patients take turns round by round.
                turn["calls"] += 1
                return _body(templates[(turn["calls"] // 2) % len(templates)])

            settle_heap()
            subjects = {name: (lambda n=name: post(n, path, next_body())) for name in apps}

            def paced_settle() -> None:
                gc.collect()
                time.sleep(PACE_S)  # the writer thread finishes the previous call's rows meanwhile

            paced = interleaved(subjects, reps=reps, warmup=warmup, budget_s=budget_s, settle=paced_settle)
            burst = interleaved(subjects, reps=reps, warmup=warmup, budget_s=budget_s)
            failures = apps["memory-on"].state.va.metrics.memory_lookup_failures_total
            failed = sum(s.value for m in failures.collect() for s in m.samples if s.name.endswith("_total"))
        finally:
            for client in clients.values():
                loop.run_until_complete(client.aclose())
            loop.close()
            for name in apps:
                drain(name)
                apps[name].state.va.store.close()
    on, off = summarize(paced["memory-on"]), summarize(paced["memory-off"])
    delta = on.median_ms - off.median_ms
    b_on, b_off = summarize(burst["memory-on"]), summarize(burst["memory-off"])
    b_delta = b_on.median_ms - b_off.median_ms
    actions = sorted({a for c in changed for a in c["extension"]["org.va-cds.memory"]["actions"]})
    res.lines += [
        f"memory: order-sign of {w.resources} resources, {on.n} calls each, interleaved; {patients} patients "
        f"taking turns, each with {history + 1} earlier calls (+{on.n // patients} during the run); memory "
        f"changed {len(changed)} of {len(shown)} cards ({', '.join(actions)})",
        f"memory: paced ({PACE_S * 1000:.0f} ms apart): p50 on {fmt(on.median_ms)} ms, off "
        f"{fmt(off.median_ms)} ms → delta {fmt(delta)} ms; p90 on {fmt(on.p90_ms)} ms, off "
        f"{fmt(off.p90_ms)} ms",
        f"memory: back to back (writer thread busy): p50 on {fmt(b_on.median_ms)} ms, off "
        f"{fmt(b_off.median_ms)} ms → delta {fmt(b_delta)} ms; p90 on {fmt(b_on.p90_ms)} ms, off "
        f"{fmt(b_off.p90_ms)} ms",
        f"memory: lookups that failed or timed out: {failed:g}",
    ]
    res.targets.append(Target("memory: p50 delta, memory on − off (paced)", delta, 1.0, "max", " ms"))
    res.data.update(
        {
            "resources": w.resources,
            "patients": patients,
            "history_calls_per_patient": history + 1,
            "cards_changed_by_memory": len(changed),
            "pace_ms": PACE_S * 1000,
            "memory_on": on.as_dict(),
            "memory_off": off.as_dict(),
            "p50_delta_ms": round(delta, 3),
            "back_to_back_memory_on": b_on.as_dict(),
            "back_to_back_memory_off": b_off.as_dict(),
            "back_to_back_p50_delta_ms": round(b_delta, 3),
            "lookup_failures": failed,
        }
    )
    res.table += [
        ("p50 memory on / off (ms)", f"{fmt(on.median_ms)} / {fmt(off.median_ms)}"),
        ("p50 delta (ms)", fmt(delta)),
        (
            "back to back: p50 on / off (ms), delta",
            f"{fmt(b_on.median_ms)} / {fmt(b_off.median_ms)}, {fmt(b_delta)}",
        ),
    ]
    return res
