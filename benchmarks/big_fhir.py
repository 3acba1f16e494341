"""A FHIR server of large pages for the `budget` case: every search answers ~`--page-mb` MB searchsets.

Run as `python -m benchmarks.big_fhir --port N [--page-mb 19] [--pages 5]` (binds 127.0.0.1 only). Reads
(`Patient/<id>`, `Encounter/<id>`) get a small resource; a search gets one Observation padded with a long note
and a `next` link, for `--pages` pages — what the security review used (13 keys × 5 pages × ~19 MB). Raw
asyncio HTTP/1.1 with keep-alive; page bodies are built once and reused. `GET /health` answers `ok`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit

import orjson

HOST = "127.0.0.1"


def _page(page_bytes: int, page: int, next_url: str | None) -> bytes:
    bundle: dict[str, object] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"big-{page}",
                    "status": "final",
                    "code": {"text": "padding"},
                    "note": [{"text": "x" * max(0, page_bytes - 400)}],
                }
            }
        ],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return orjson.dumps(bundle)


class BigFhir:
    def __init__(self, port: int, page_bytes: int, pages: int) -> None:
        self.port = port
        self.page_bytes = page_bytes
        self.pages = pages
        self._padding = _page(page_bytes, 0, None)  # built once: the filler dominates every page

    def body_for(self, target: str) -> list[bytes | memoryview]:
        """The answer as pieces: a page is the prebuilt padding (never copied) plus its own `next` link."""
        parts = urlsplit(target)
        path = parts.path.removeprefix("/fhir/").strip("/")
        if "/" in path:  # a read
            kind, _, ident = path.partition("/")
            return [orjson.dumps({"resourceType": kind, "id": ident})]
        query = parse_qs(parts.query)
        page = int(query.get("_page", ["1"])[0])
        tail = b"}"
        if page < self.pages:
            base_query = "&".join(p for p in parts.query.split("&") if not p.startswith("_page="))
            sep = "&" if base_query else ""
            nxt = f"http://{HOST}:{self.port}{parts.path}?{base_query}{sep}_page={page + 1}"
            tail = b',"link":[{"relation":"next","url":' + orjson.dumps(nxt) + b"}]}"
        return [memoryview(self._padding)[:-1], tail]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode("latin-1")
                if target.startswith("/health"):
                    pieces: list[bytes | memoryview] = [b"ok"]
                    ctype = "text/plain"
                else:
                    pieces, ctype = self.body_for(target), "application/fhir+json"
                size = sum(len(p) for p in pieces)
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {size}\r\n\r\n".encode()
                )
                # 1 MB at a time with a drain in between: the transport never buffers (copies) a whole page.
                for piece in pieces:
                    for start in range(0, len(piece), 1 << 20):
                        writer.write(piece[start : start + (1 << 20)])
                        await writer.drain()
        writer.close()


async def main(port: int, page_mb: float, pages: int) -> None:
    server = BigFhir(port, int(page_mb * 1024 * 1024), pages)
    srv = await asyncio.start_server(server.serve, HOST, port, limit=64 * 1024)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--page-mb", type=float, default=19.0)
    p.add_argument("--pages", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main(a.port, a.page_mb, a.pages))
