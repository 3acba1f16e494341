"""The framework floor: a minimal FastAPI CDS endpoint that parses the body and returns one static card.

Run under uvicorn exactly like va-cds (`python -m uvicorn benchmarks.floor_app:app`); whatever va-cds
spends above this app's latency is its own work (validation, rules, cards, audit).
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

_CARD = orjson.dumps(
    {
        "cards": [
            {
                "uuid": "2f4b3f3c-7f7e-4c55-9d55-6f0e0b7b1a11",
                "summary": "Static card from the framework floor",
                "indicator": "info",
                "source": {"label": "benchmarks floor"},
            }
        ]
    }
)

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> Response:
    body = orjson.loads(await request.body())
    if not isinstance(body, dict):
        return Response(b"{}", status_code=400, media_type="application/json")
    return Response(_CARD, media_type="application/json")
