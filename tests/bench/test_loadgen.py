"""The load generator never reports a server's keep-alive expiry as a server error (issue 17).

The one error in 1,000 fixed-rate requests of the 2026-12-01 run was the client's: it sent a request on a
keep-alive connection the server had already closed for idleness and read EOF. Here a loopback server
closes every connection left idle 0.2 s, and requests come 0.3 s apart: each one finds its connection
closed. The generator must notice and open a new one — zero errors, every request answered.
"""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks import loadgen

IDLE_CLOSE_S = 0.2


async def _serve_once_per_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_CLOSE_S)
            except (TimeoutError, asyncio.IncompleteReadError):
                return  # idle too long (or the client left): close, as uvicorn does after its keep-alive
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _run() -> tuple[loadgen.LoadResult, bool]:
    server = await asyncio.start_server(_serve_once_per_idle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = loadgen.build_request("127.0.0.1", port, "/x", b"{}", {"Authorization": "Bearer t"})
    try:
        conn = await loadgen.Connection.open("127.0.0.1", port)
        assert (await conn.send(raw))[0] == 200
        await asyncio.sleep(IDLE_CLOSE_S * 2)
        stale_detected = not conn.reusable()
        conn.close()
        result = await loadgen.fixed_rate(
            "127.0.0.1", port, raw, rate=1 / (IDLE_CLOSE_S * 1.5), duration_s=2.0
        )
    finally:
        server.close()
        await server.wait_closed()
    return result, stale_detected


def test_connections_closed_by_the_server_are_replaced_not_counted_as_errors() -> None:
    result, stale_detected = asyncio.run(_run())
    assert stale_detected  # the EOF the server sent is seen before a request is written
    assert result.sent == 6
    assert result.errors == 0, result.error_kinds
    assert len(result.latencies_s) == 6


def test_requests_rotate_through_a_sequence() -> None:
    reqs = loadgen.Requests([b"a", b"b", b"c"])
    assert [reqs.next() for _ in range(5)] == [b"a", b"b", b"c", b"a", b"b"]
