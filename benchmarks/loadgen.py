"""A small HTTP/1.1 load generator on raw asyncio streams (lighter than an HTTP client library).

It shares the machine's cores with the server under test, so it is kept minimal: one pre-built request,
keep-alive connections, Content-Length bodies only (what uvicorn sends). Two modes:

* `fixed_rate`: open loop, request i is due at start + i/rate; latency is measured from the moment it
  was due (so a stalled server cannot hide queueing: no coordinated omission);
* `closed_loop`: N workers, each with its own connection, sending back to back for a fixed time.

Every loop is bounded in count and time; a request that errors, times out or answers non-200 is
counted as an error, by kind (`LoadResult.error_kinds`: the exception's name or `http-<status>`).

`raw` is one pre-built request, or a sequence of them used in turn (request i sends raws[i % n]): with
authentication on, each request needs a token of its own (a fresh `jti`), minted before the phase starts.

Idle keep-alive connections are not reused once the server may have closed them: uvicorn closes a connection
idle for its keep-alive timeout (5 s by default), and a request written to such a connection reads EOF
(`IncompleteReadError`) — a client artefact, not a server error. That is what the single error in 1,000
fixed-rate requests of the 2026-12-01 run was (issue 17): a spare connection opened during a burst, left idle
past 5 s at the bottom of the pool, then picked for a request. A connection whose server already sent EOF,
or that has been idle longer than `MAX_IDLE_S`, is closed and replaced instead, as HTTP clients do.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.stats import percentile

# Below uvicorn's default keep-alive timeout (5 s): a connection idle longer may be closed under our feet.
MAX_IDLE_S = 4.0


class HttpError(Exception):
    """Malformed or unexpected HTTP from the server."""


class Requests:
    """One pre-built request, or several used in turn."""

    def __init__(self, raw: bytes | Sequence[bytes]) -> None:
        self._raws: Sequence[bytes] = [raw] if isinstance(raw, bytes) else raw
        if not self._raws:
            raise ValueError("no request to send")
        self._next = itertools.count()

    def __len__(self) -> int:
        return len(self._raws)

    def next(self) -> bytes:
        return self._raws[next(self._next) % len(self._raws)]


def build_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.usable = True
        self.last_used = time.monotonic()

    def reusable(self) -> bool:
        """Still worth a request: not closed by either side, and not idle past the server's keep-alive."""
        return self.usable and not self.reader.at_eof() and time.monotonic() - self.last_used < MAX_IDLE_S

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lname = name.strip().lower()
            if lname == "content-length":
                length = int(value.strip())
            elif lname == "connection" and value.strip().lower() == "close":
                self.usable = False
            elif lname == "transfer-encoding":
                raise HttpError("chunked responses are not supported by this load generator")
        if length is None:
            raise HttpError("response without Content-Length")
        body = await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        return status, body

    def close(self) -> None:
        self.usable = False
        self.writer.close()


@dataclass(slots=True)
class LoadResult:
    mode: str
    offered: str
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0  # CPU the load generator itself used (it shares the cores)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def as_dict(self) -> dict[str, object]:
        ms = [x * 1000 for x in self.latencies_s]
        return {
            "mode": self.mode,
            "offered": self.offered,
            "sent": self.sent,
            "ok": len(ms),
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "p50_ms": round(percentile(ms, 50), 3),
            "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(max(ms), 3) if ms else None,
            "throughput_rps": round(len(ms) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "client_cpu_pct": round(100 * self.client_cpu_s / self.elapsed_s, 1) if self.elapsed_s else 0.0,
        }


async def _one(conn: Connection, raw: bytes, timeout_s: float, result: LoadResult, started: float) -> bool:
    try:
        status, _ = await asyncio.wait_for(conn.send(raw), timeout_s)
    except TimeoutError:
        result.error("timeout")
        conn.close()
        return False
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError) as exc:
        result.error(type(exc).__name__)
        conn.close()
        return False
    if status != 200:
        result.error(f"http-{status}")
        return conn.usable
    result.latencies_s.append(time.perf_counter() - started)
    return conn.usable


async def fixed_rate(
    host: str,
    port: int,
    raw: bytes | Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    timeout_s: float = 5.0,
    max_connections: int = 64,
) -> LoadResult:
    """Open-loop load at `rate` requests/s for `duration_s`."""
    result = LoadResult("fixed-rate", f"{rate:g} req/s for {duration_s:g} s")
    total = int(rate * duration_s)
    requests = Requests(raw)
    idle: list[Connection] = []
    opened = 0

    def take_idle() -> Connection | None:
        nonlocal opened
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()  # closed by the server, or about to be: never send a request on it
            opened -= 1
        return None

    async def fire(due: float) -> None:
        nonlocal opened
        conn = take_idle()
        if conn is None:
            if opened >= max_connections:
                result.error("dropped: 64 requests already in flight (server saturated)")
                return
            opened += 1
            try:
                conn = await Connection.open(host, port)
            except OSError as exc:
                opened -= 1
                result.error(type(exc).__name__)
                return
        if await _one(conn, requests.next(), timeout_s, result, due):
            idle.append(conn)
        else:
            opened -= 1

    tasks: list[asyncio.Task[None]] = []
    cpu0 = time.process_time()
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(due)))
        result.sent += 1
    await asyncio.wait_for(asyncio.gather(*tasks), timeout_s + 5)
    result.elapsed_s = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - cpu0
    for c in idle:
        c.close()
    return result


async def closed_loop(
    host: str,
    port: int,
    raw: bytes | Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int = 100_000,
    timeout_s: float = 10.0,
) -> LoadResult:
    """`concurrency` workers sending back to back for `duration_s` (at most `max_requests` in all)."""
    result = LoadResult("closed-loop", f"concurrency {concurrency} for {duration_s:g} s")
    requests = Requests(raw)
    stop_at = time.perf_counter() + duration_s
    budget = [max_requests]

    async def worker() -> None:
        conn: Connection | None = None
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            if conn is None or not conn.reusable():
                if conn is not None:
                    conn.close()
                try:
                    conn = await Connection.open(host, port)
                except OSError as exc:
                    result.error(type(exc).__name__)
                    await asyncio.sleep(0.01)
                    continue
            result.sent += 1
            await _one(conn, requests.next(), timeout_s, result, time.perf_counter())
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(concurrency))), duration_s + timeout_s + 5
    )
    result.elapsed_s = time.perf_counter() - started
    result.client_cpu_s = time.process_time() - cpu0
    return result


async def warm_up(host: str, port: int, raw: bytes | Sequence[bytes], requests: int = 20) -> LoadResult:
    """A few sequential requests (imports, caches, first connection) before anything is measured."""
    return await closed_loop(host, port, raw, concurrency=1, duration_s=30.0, max_requests=requests)
