"""A FHIR server stub for the fetch case: fixed latency per response, one resource type can be stalled.

Run as `python -m uvicorn benchmarks.fhir_stub:app` with `VA_CDS_BENCH_STUB_DATA` naming a JSON file
`{normalised query: FHIR JSON}` (see `normalise`); unknown searches answer an empty searchset Bundle.
`POST /_control?delay_ms=100&stall=AllergyIntolerance&stall_s=10` sets the latency of every response and
the resource type whose requests hang for `stall_s` (at most 30 s) before answering.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MAX_STALL_S = 30.0
FHIR_JSON = "application/fhir+json"


def normalise(path: str, query: str) -> str:
    """`Type?k=v&...` with decoded, sorted parameters: the same search however it was encoded."""
    params = sorted(parse_qsl(query, keep_blank_values=True))
    tail = "&".join(f"{k}={v}" for k, v in params)
    return path.strip("/") + ("?" + tail if tail else "")


class _State:
    def __init__(self) -> None:
        self.delay_s = 0.1
        self.stall_type: str | None = None
        self.stall_s = 10.0
        self.requests = 0
        data_file = os.environ.get("VA_CDS_BENCH_STUB_DATA")
        raw: dict[str, Any] = orjson.loads(Path(data_file).read_bytes()) if data_file else {}
        self.data = {k: orjson.dumps(v) for k, v in raw.items()}


STATE = _State()
_EMPTY = orjson.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []})


async def fhir(request: Request) -> Response:
    path = request.path_params["rest"]
    STATE.requests += 1
    rtype = path.split("/")[0].split("?")[0]
    if STATE.stall_type and rtype == STATE.stall_type:
        await asyncio.sleep(min(STATE.stall_s, MAX_STALL_S))
    else:
        await asyncio.sleep(STATE.delay_s)
    key = normalise(path, request.url.query)
    body = STATE.data.get(key)
    if body is None:
        if "/" in path:
            return Response(b'{"resourceType":"OperationOutcome"}', status_code=404, media_type=FHIR_JSON)
        body = _EMPTY
    return Response(body, media_type=FHIR_JSON)


async def control(request: Request) -> Response:
    q = request.query_params
    if "delay_ms" in q:
        STATE.delay_s = max(0.0, min(float(q["delay_ms"]) / 1000, MAX_STALL_S))
    if "stall" in q:
        STATE.stall_type = q["stall"] or None
    if "stall_s" in q:
        STATE.stall_s = max(0.0, min(float(q["stall_s"]), MAX_STALL_S))
    return Response(
        orjson.dumps(
            {
                "delay_s": STATE.delay_s,
                "stall": STATE.stall_type,
                "stall_s": STATE.stall_s,
                "requests": STATE.requests,
            }
        ),
        media_type="application/json",
    )


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/_control", control, methods=["POST"]),
        Route("/fhir/{rest:path}", fhir),
    ]
)
