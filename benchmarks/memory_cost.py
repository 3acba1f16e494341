"""Case `memory`: what alert memory adds to a hook response (issue 19; target: p50 grows ≤ 1 ms).

Two apps built alike, in-process through the ASGI interface (httpx.ASGITransport), each on its own SQLite
file: one with a stable patient hash key (memory on), one without (memory off, the only difference). The
same 100-resource order-sign (the `http` case's body) goes to both, interleaved, order rotated each round.

The memory-on database first gets a history for this patient: `memory_history` earlier calls, every warning
of the first one overridden and every suggestion accepted. So each measured call does the whole of memory's
work: the indexed lookup (in a worker thread, as in production), demoting the overridden warnings,
withholding the accepted orders — and its audit rows grow the history the next lookup reads.
"""

from __future__ import annotations

import asyncio
import tempfile
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


def _body(request: dict[str, Any]) -> bytes:
    return orjson.dumps({**request, "hookInstance": str(uuid.uuid4())})


def case_memory(reps: int, warmup: int, history: int, budget_s: float, resources: int = 100) -> CaseResult:
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

        def post(name: str, path: str, body: bytes) -> dict[str, Any]:
            headers = {"content-type": "application/json"}
            r = loop.run_until_complete(clients[name].post(path, content=body, headers=headers))
            assert r.status_code == 200, r.text
            return dict(r.json())

        def drain(name: str) -> None:
            apps[name].state.va.close_writer()  # every queued audit row written (the writer restarts on use)

        try:
            first = post("memory-on", path, _body(w.request))
            drain("memory-on")
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            items: list[dict[str, Any]] = []
            for card in first["cards"]:
                if card["indicator"] == "warning":
                    items.append({"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": now})
                if card.get("suggestions"):
                    ids = [{"id": s["uuid"]} for s in card["suggestions"]]
                    items.append(
                        {
                            "card": card["uuid"],
                            "outcome": "accepted",
                            "acceptedSuggestions": ids,
                            "outcomeTimestamp": now,
                        }
                    )
            post("memory-on", f"{path}/feedback", orjson.dumps({"feedback": items}))
            for _ in range(history):
                post("memory-on", path, _body(w.request))
            drain("memory-on")
            shown = post("memory-on", path, _body(w.request))["cards"]
            changed = [c for c in shown if "org.va-cds.memory" in (c.get("extension") or {})]
            settle_heap()
            times = interleaved(
                {name: (lambda n=name: post(n, path, _body(w.request))) for name in apps},
                reps=reps,
                warmup=warmup,
                budget_s=budget_s,
            )
            failures = apps["memory-on"].state.va.metrics.memory_lookup_failures_total
            failed = sum(s.value for m in failures.collect() for s in m.samples if s.name.endswith("_total"))
        finally:
            for client in clients.values():
                loop.run_until_complete(client.aclose())
            loop.close()
            for name in apps:
                drain(name)
                apps[name].state.va.store.close()
    on, off = summarize(times["memory-on"]), summarize(times["memory-off"])
    delta = on.median_ms - off.median_ms
    actions = sorted({a for c in changed for a in c["extension"]["org.va-cds.memory"]["actions"]})
    res.lines += [
        f"memory: order-sign of {w.resources} resources, {on.n} calls each, interleaved; history: "
        f"{history + 2} earlier calls for the patient; memory changed {len(changed)} of {len(shown)} cards "
        f"({', '.join(actions)})",
        f"memory: p50 on {fmt(on.median_ms)} ms, off {fmt(off.median_ms)} ms → delta {fmt(delta)} ms; "
        f"p90 on {fmt(on.p90_ms)} ms, off {fmt(off.p90_ms)} ms; lookups that failed or timed out: {failed:g}",
    ]
    res.targets.append(Target("memory: p50 delta, memory on − off", delta, 1.0, "max", " ms"))
    res.data.update(
        {
            "resources": w.resources,
            "history_calls": history + 2,
            "cards_changed_by_memory": len(changed),
            "memory_on": on.as_dict(),
            "memory_off": off.as_dict(),
            "p50_delta_ms": round(delta, 3),
            "lookup_failures": failed,
        }
    )
    res.table += [
        ("p50 memory on / off (ms)", f"{fmt(on.median_ms)} / {fmt(off.median_ms)}"),
        ("p50 delta (ms)", fmt(delta)),
    ]
    return res
