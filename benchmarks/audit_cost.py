"""Does writing the audit record (and checklist snapshot) slow the hook response? Measured in one run.

In-process through the ASGI app: the same order-sign, alternately with the group-commit writer doing its
database writes (audit row and checklist snapshot) and with both dropped. Prints the p50/p90 of both and
their ratio. Run:
`.venv/bin/python -m benchmarks.audit_cost`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx

from cds_service.app import create_app
from cds_service.settings import Settings

SYNTHEA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthea"


class _DropWrites:
    """Stands in for State.writer: accepts every item and stores nothing."""

    def submit(self, *_args: Any, **_kwargs: Any) -> Future[bool]:
        done: Future[bool] = Future()
        done.set_result(True)
        return done


def main() -> None:
    tmp = tempfile.mkdtemp()
    app = create_app(Settings(auth_mode="off", database_url=f"sqlite:///{tmp}/a.db", log_level="WARNING"))
    state = app.state.va
    svc = state.services["va-preprocedure-order-sign"]
    record = json.loads(next(SYNTHEA.glob("Cruz_Halvorson_*.json")).read_text())
    res = [e["resource"] for e in record["entry"]]
    patient = next(r for r in res if r["resourceType"] == "Patient")
    prefetch: dict[str, Any] = {
        k: {"resourceType": "Bundle", "type": "searchset", "entry": []} for k in svc.prefetch
    }
    prefetch["patient"] = patient
    for key, rtype, n in (("conditions", "Condition", 40), ("medicationRequests", "MedicationRequest", 30)):
        found = [{"resource": r} for r in res if r["resourceType"] == rtype][:n]
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": found}
    draft = {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "draft",
                    "intent": "order",
                    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
                }
            }
        ],
    }

    def body() -> dict[str, Any]:
        ctx = {"userId": "Practitioner/u", "patientId": patient["id"], "draftOrders": draft}
        return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": ctx, "prefetch": prefetch}

    async def run(client: httpx.AsyncClient, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post("/cds-services/va-preprocedure-order-sign", json=body())
            out.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
        return out

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://va-cds") as client:
            await run(client, 20)  # warm-up
            with_writes: list[float] = []
            without: list[float] = []
            for _ in range(6):  # interleaved blocks
                with_writes += await run(client, 25)
                real = state._writer
                state._writer = _DropWrites()
                without += await run(client, 25)
                state._writer = real
        p50w, p50n = statistics.median(with_writes), statistics.median(without)
        print(f"audit_cost: p50 with writes {p50w:.2f} ms, without {p50n:.2f} ms, ratio {p50w / p50n:.3f}")
        p90w, p90n = statistics.quantiles(with_writes, n=10)[-1], statistics.quantiles(without, n=10)[-1]
        print(f"audit_cost: p90 with writes {p90w:.2f} ms, without {p90n:.2f} ms")

    asyncio.run(go())
    state.close_writer()


if __name__ == "__main__":
    main()
