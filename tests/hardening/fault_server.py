"""A fault-injecting FHIR server: a real HTTP/1.1 server on 127.0.0.1 (raw asyncio, its own thread).

Tests ask for a *plan*: a base URL (`http://127.0.0.1:<port>/<plan>/fhir`) on which requests whose
decoded path+query contains `match` get the fault, and every other request gets a well-behaved FHIR
answer (a Patient or Encounter for reads, an empty searchset for searches). Raw asyncio rather than a
framework, so a fault can do what frameworks prevent: never answer, send headers and then trickle the body,
stream 50 MB, or send bytes that are not JSON.

Faults (`FAULTS`):

    timeout         read the request, never answer (until the client gives up or the server stops)
    stalled-body    200 + headers (Content-Length 1 MB), a few body bytes, then one byte every 200 ms
    http-401/403/404/500   that status with an OperationOutcome body
    http-429        429 with `Retry-After: 120`
    malformed-json  200 application/fhir+json whose body is truncated JSON
    not-fhir        200 JSON that is not a FHIR resource (`{"status": "ok", "items": []}`)
    next-loop       searchset page 1 → `next` page 2 → `next` page 1 ... (absolute URLs on this server)
    huge            200, chunked, no Content-Length, 50 MB of a syntactically valid searchset
    huge-declared   200 with `Content-Length: 52428800` and the same 50 MB body
    slow            the normal answer, after `delay_s` seconds (the shutdown test's slow FHIR server)
    big-pages       searches answer a searchset of about `page_bytes` bytes (one Observation padded with a
                    long note) with a `next` link, for `pages` pages; reads answer normally

Everything is bounded: a hung or trickling answer ends after `hang_limit_s` (default 30 s) or when the
server stops, whichever is first; the server only ever listens on 127.0.0.1. `requests` records what was
asked and how many body bytes were sent (to check e.g. that a 50 MB body was cut short).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import orjson

FAULTS = (
    "timeout",
    "stalled-body",
    "http-401",
    "http-403",
    "http-404",
    "http-429",
    "http-500",
    "malformed-json",
    "not-fhir",
    "next-loop",
    "huge",
    "huge-declared",
    "slow",
    "big-pages",
)
HUGE_BYTES = 50 * 1024 * 1024
_CHUNK = 64 * 1024
_REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class Plan:
    fault: str
    match: str | None  # substring of the decoded path+query that gets the fault; None: every request
    delay_s: float = 0.0
    page_bytes: int = 0
    pages: int = 5


@dataclass(slots=True)
class Seen:
    plan: str
    target: str  # decoded path + query below the plan's base
    faulted: bool
    bytes_sent: int = 0
    finished: bool = False


@dataclass(slots=True)
class _Runtime:
    loop: asyncio.AbstractEventLoop | None = None
    server: asyncio.Server | None = None
    stopping: asyncio.Event | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def operation_outcome(code: str, text: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def empty_searchset() -> dict[str, object]:
    return {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}


class FaultServer:
    """Start with `start()` (or as a context manager); `plan(fault, match)` gives a fhirServer base URL."""

    def __init__(self, *, hang_limit_s: float = 30.0) -> None:
        self.hang_limit_s = hang_limit_s
        self.port = 0
        self.requests: list[Seen] = []
        self._plans: dict[str, Plan] = {}
        self._reserved: list[str] = []
        self._ids = itertools.count(1)
        self._rt = _Runtime()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FaultServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._rt.loop = loop
            try:
                self._rt.stopping = asyncio.Event()
                self._rt.server = loop.run_until_complete(
                    asyncio.start_server(self._serve, "127.0.0.1", 0, limit=64 * 1024)
                )
                self.port = self._rt.server.sockets[0].getsockname()[1]
            except BaseException as exc:  # pragma: no cover - start-up failure is reported to start()
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._drain())
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-fhir-server", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"fault server did not start: {errors}")
        return self

    def stop(self) -> None:
        loop = self._rt.loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(15)
        self._thread = None

    async def _drain(self) -> None:
        assert self._rt.stopping is not None and self._rt.server is not None
        self._rt.stopping.set()
        self._rt.server.close()
        for task in list(self._rt.tasks):
            task.cancel()
        await asyncio.gather(*self._rt.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._rt.server.wait_closed(), 5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- plans -----------------------------------------------------------------------------------------
    def plan(
        self,
        fault: str,
        match: str | None = None,
        *,
        delay_s: float = 0.0,
        page_bytes: int = 1024 * 1024,
        pages: int = 5,
    ) -> str:
        """A fresh fhirServer base URL whose requests containing `match` get `fault`."""
        if fault not in FAULTS and fault != "none":
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            name = self._reserved.pop(0) if self._reserved else f"p{next(self._ids)}"
        self._plans[name] = Plan(fault, match, delay_s, page_bytes, pages)
        return f"http://127.0.0.1:{self.port}/{name}/fhir"

    def reserve(self, count: int) -> list[str]:
        """`count` base URLs that later `plan()` calls hand out in order (before any new name).

        An app allowlists exact FHIR base URLs (`VA_CDS_FHIR_SERVERS`); a test reserves the bases its plans
        will use and lists them in the app's settings before the plans exist.
        """
        with self._lock:
            names = [f"p{next(self._ids)}" for _ in range(count)]
            self._reserved.extend(names)
        return [f"http://127.0.0.1:{self.port}/{name}/fhir" for name in names]

    def seen(self, base_url: str) -> list[Seen]:
        name = urlsplit(base_url).path.strip("/").split("/")[0]
        with self._lock:
            return [s for s in self.requests if s.plan == name]

    # -- HTTP ------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._rt.tasks.add(task)  # type: ignore[arg-type]
        try:
            for _ in range(100):  # keep-alive, bounded
                head = await reader.readuntil(b"\r\n\r\n")
                keep = await self._answer(head, reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._rt.tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        target = parts[1] if len(parts) >= 2 else "/"
        path_parts = urlsplit(target).path.lstrip("/").split("/", 2)
        plan_name = path_parts[0] if path_parts else ""
        plan = self._plans.get(plan_name)
        rest = unquote(target.split("/fhir/", 1)[1]) if "/fhir/" in target else ""
        if plan is None:
            await self._send_json(writer, 404, operation_outcome("not-found", "no such plan"))
            return False
        faulted = plan.fault != "none" and (plan.match is None or plan.match in rest)
        seen = Seen(plan_name, rest, faulted)
        with self._lock:
            self.requests.append(seen)
        fault = plan.fault if faulted else "none"
        if fault == "slow":
            await self._sleep(plan.delay_s)
            fault = "none"
        if fault == "none":
            seen.bytes_sent = await self._send_json(writer, 200, normal_answer(rest))
        elif fault == "timeout":
            # Never answer: wait until the client hangs up (EOF), the limit passes or the server stops.
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), timeout=self.hang_limit_s)
            return False
        elif fault == "stalled-body":
            await self._stall(writer, seen)
            return False
        elif fault.startswith("http-"):
            status = int(fault.removeprefix("http-"))
            extra = {"Retry-After": "120"} if status == 429 else {}
            body = operation_outcome("throttled" if status == 429 else "security", f"injected {status}")
            seen.bytes_sent = await self._send_json(writer, status, body, extra)
        elif fault == "malformed-json":
            seen.bytes_sent = await self._send(writer, 200, b'{"resourceType": "Bundle", "entry": [{"resou')
        elif fault == "not-fhir":
            seen.bytes_sent = await self._send_json(writer, 200, {"status": "ok", "items": []})
        elif fault == "next-loop":
            page = "2" if "page=1" in rest or "page=" not in rest else "1"
            base = f"http://127.0.0.1:{self.port}/{plan_name}/fhir/"
            query = rest.split("&page=")[0]
            body = {**empty_searchset(), "link": [{"relation": "next", "url": f"{base}{query}&page={page}"}]}
            seen.bytes_sent = await self._send_json(writer, 200, body)
        elif fault == "big-pages":
            seen.bytes_sent = await self._send(writer, 200, big_page(plan, plan_name, self.port, rest))
        elif fault in ("huge", "huge-declared"):
            await self._huge(writer, seen, declared=fault == "huge-declared")
            return False
        seen.finished = True
        return True

    async def _sleep(self, seconds: float) -> None:
        assert self._rt.stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rt.stopping.wait(), timeout=seconds)

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
    ) -> int:
        headers = {"Content-Type": "application/fhir+json", "Content-Length": str(len(body)), **(extra or {})}
        writer.write(self._head(status, headers) + body)
        await writer.drain()
        return len(body)

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, body: object, extra: dict[str, str] | None = None
    ) -> int:
        return await self._send(writer, status, orjson.dumps(body), extra)

    async def _stall(self, writer: asyncio.StreamWriter, seen: Seen) -> None:
        writer.write(self._head(200, {"Content-Type": "application/fhir+json", "Content-Length": "1000000"}))
        writer.write(b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
        await writer.drain()
        started = time.monotonic()
        assert self._rt.stopping is not None
        while time.monotonic() - started < self.hang_limit_s and not self._rt.stopping.is_set():
            await asyncio.sleep(0.2)
            writer.write(b" ")
            await writer.drain()  # raises ConnectionError once the client has hung up
            seen.bytes_sent += 1

    async def _huge(self, writer: asyncio.StreamWriter, seen: Seen, *, declared: bool) -> None:
        prefix = b'{"resourceType": "Bundle", "type": "searchset", "entry": [], "padding": "'
        suffix = b'"}'
        filler = HUGE_BYTES - len(prefix) - len(suffix)
        headers = {"Content-Type": "application/fhir+json"}
        if declared:
            headers["Content-Length"] = str(HUGE_BYTES)
        else:
            headers["Transfer-Encoding"] = "chunked"
        writer.write(self._head(200, headers))
        block = b"x" * _CHUNK
        pieces = [prefix] + [block] * (filler // _CHUNK) + [b"x" * (filler % _CHUNK), suffix]
        for piece in pieces:
            if not piece:
                continue
            writer.write(piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()  # raises ConnectionError once the client has hung up
            seen.bytes_sent += len(piece)
        if not declared:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        seen.finished = True


def big_page(plan: Plan, plan_name: str, port: int, target: str) -> bytes:
    """One page of a `big-pages` search: a valid searchset of about `plan.page_bytes` bytes."""
    path, _, query = target.partition("?")
    if "/" in path.strip("/"):  # a read: answer it normally
        return orjson.dumps(normal_answer(target))
    page = int(query.rsplit("&page=", 1)[1]) if "&page=" in query else 1
    base_query = query.split("&page=")[0]
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
                    "note": [{"text": "x" * max(0, plan.page_bytes - 400)}],
                }
            }
        ],
    }
    if page < plan.pages:
        url = f"http://127.0.0.1:{port}/{plan_name}/fhir/{path}?{base_query}&page={page + 1}"
        bundle["link"] = [{"relation": "next", "url": url}]
    return orjson.dumps(bundle)


def normal_answer(target: str) -> dict[str, object]:
    """What a healthy FHIR server answers: a read gets its resource, a search an empty searchset."""
    path = target.split("?", 1)[0].strip("/")
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "Patient":
        return {"resourceType": "Patient", "id": parts[1], "gender": "female", "birthDate": "1948-03-02"}
    if len(parts) == 2 and parts[0] == "Encounter":
        return {
            "resourceType": "Encounter",
            "id": parts[1],
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        }
    return empty_searchset()
