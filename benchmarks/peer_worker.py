"""HealthChain side of the peer case, run by the peer venv's Python (never imports va-cds code).

HealthChain pins older fastapi/httpx/fhir.resources, so it lives in its own virtualenv (see
`benchmarks/peer.py`) and this script is run there as a subprocess. Usage:

    <peer-python> benchmarks/peer_worker.py BODY.json

It builds the documented HealthChain service — `CDSHooksService` with an `order-sign` hook whose handler
turns the prefetch into FHIR objects with `CdsFhirAdapter().parse(request)` and returns one card — and
then answers line commands on stdin: `run` times one request from raw bytes (json.loads as Starlette
does, `CDSRequest` validation as FastAPI's `Body` does, `handle_request`, `model_dump_json` of the
response) and prints the seconds; `quit` (or EOF, or 100,000 lines) ends it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    logging.disable(logging.WARNING)  # same log level as va-cds under benchmark
    from healthchain.gateway import CDSHooksService
    from healthchain.io.adapters.cdsfhiradapter import CdsFhirAdapter
    from healthchain.models import CDSRequest, CDSResponse
    from healthchain.models.responses.cdsresponse import Card

    body = open(argv[1], "rb").read()
    cds = CDSHooksService(use_events=False)
    adapter = CdsFhirAdapter()
    seen: dict[str, Any] = {}

    @cds.hook("order-sign", id="va-preprocedure-peer")
    def handler(request: CDSRequest) -> CDSResponse:
        doc = adapter.parse(request)
        resources = doc.fhir.prefetch_resources
        typed = sum(1 for v in resources.values() if not isinstance(v, dict))
        entries = sum(len(getattr(v, "entry", None) or ()) for v in resources.values())
        seen.update(keys=len(resources), typed_keys=typed, typed_entries=entries)
        return CDSResponse(
            cards=[
                Card(
                    summary=f"{entries} prefetched resources read",
                    indicator="info",
                    source={"label": "healthchain peer"},
                )
            ]
        )

    def once() -> float:
        t0 = time.perf_counter()
        req = CDSRequest.model_validate(json.loads(body))
        resp = cds.handle_request(req)
        out = resp.model_dump_json(exclude_none=True)
        elapsed = time.perf_counter() - t0
        if not resp.cards or not out:
            raise RuntimeError("healthchain returned no card")
        return elapsed

    once()
    from importlib.metadata import version

    info = {"version": version("healthchain"), **seen}
    print("ready " + json.dumps(info), flush=True)
    for _ in range(100_000):
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            break
        if line.strip() == "run":
            print(f"{once():.9f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
