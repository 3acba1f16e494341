"""A FHIR server stub for the fetch case: fixed latency per response, one resource type can be stalled.

A real HTTP/1.1 server on raw asyncio streams (keep-alive, Content-Length), so that its own per-request
cost is negligible next to the 100 ms it is told to wait — a framework here would add its overhead to
every "FHIR server" response and blur what the case measures (va-cds fetching keys concurrently).

Run as `python -m benchmarks.fhir_stub --port N` (binds 127.0.0.1 only) with `VA_CDS_BENCH_STUB_DATA`
naming a JSON file `{normalised query: FHIR JSON}` (see `normalise`) served under `/fhir/`; unknown
searches answer an empty searchset Bundle, unknown reads 404. `POST /_control?delay_ms=100&stall=
AllergyIntolerance&stall_s=5` sets the latency of every response and the resource type whose requests
hang for `stall_s` (at most 30 s) before answering. `GET /health` answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

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


def _response(status: int, body: bytes, ctype: str = FHIR_JSON) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body


async def answer(method: str, target: str) -> bytes:
    """The response to one request line (the stub never reads request bodies)."""
    url = urlsplit(target)
    if url.path == "/health":
        return _response(200, b'{"status":"ok"}', "application/json")
    if url.path == "/_control" and method == "POST":
        q = dict(parse_qsl(url.query, keep_blank_values=True))
        if "delay_ms" in q:
            STATE.delay_s = max(0.0, min(float(q["delay_ms"]) / 1000, MAX_STALL_S))
        if "stall" in q:
            STATE.stall_type = q["stall"] or None
        if "stall_s" in q:
            STATE.stall_s = max(0.0, min(float(q["stall_s"]), MAX_STALL_S))
        doc = {"delay_s": STATE.delay_s, "stall": STATE.stall_type, "stall_s": STATE.stall_s}
        return _response(200, orjson.dumps({**doc, "requests": STATE.requests}), "application/json")
    if not url.path.startswith("/fhir/") or method != "GET":
        return _response(404, b'{"resourceType":"OperationOutcome"}')
    STATE.requests += 1
    path = url.path.removeprefix("/fhir/")
    rtype = path.split("/")[0]
    if STATE.stall_type and rtype == STATE.stall_type:
        await asyncio.sleep(min(STATE.stall_s, MAX_STALL_S))
    else:
        await asyncio.sleep(STATE.delay_s)
    body = STATE.data.get(normalise(path, url.query))
    if body is None:
        if "/" in path.strip("/"):
            return _response(404, b'{"resourceType":"OperationOutcome"}')
        body = _EMPTY
    return _response(200, body)


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(100_000):  # requests per connection, bounded
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(_response(400, b"{}", "application/json"))
                return
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value.strip())
            if length:
                await reader.readexactly(min(length, 1_000_000))
            writer.write(await answer(parts[0], parts[1]))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(port: int, ready: asyncio.Event | None = None) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, limit=1 << 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if ready is not None:
            ready.set()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fhir_stub")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port))
    except OSError as exc:  # e.g. the port was taken meanwhile: say so, the harness retries
        print(f"fhir_stub: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
