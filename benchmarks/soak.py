"""Soak test: thousands of mixed valid and invalid requests against va-cds under uvicorn, on loopback only.

    .venv/bin/python -m benchmarks.soak             # 3000 requests at concurrency 50 (`make soak`)
    .venv/bin/python -m benchmarks.soak --quick     # ~300 requests (tests/hardening/test_soak_quick.py)
    .venv/bin/python -m benchmarks.soak --requests 20000 --max-seconds 900

Starts `python -m uvicorn cds_service.app:app` as a subprocess on 127.0.0.1 (authentication off, a fresh
SQLite file in a temporary directory, log level WARNING), warms it up, then sends the mix below with a fixed
seed, `--concurrency` requests in flight at any time:

    valid    va-preprocedure order-sign (drafted kyphoplasty, full prefetch: warfarin, INR, ...)  200
    valid    va-postprocedure-patient-view (a kyphoplasty on record, full prefetch)                 200
    valid    va-discharge encounter-discharge (full prefetch)                                         200
    valid    feedback, one entry with a card uuid never sent before                                   200
    invalid  malformed JSON                                                                           400
    invalid  a hook the service does not answer                                                       400
    invalid  text/plain body                                                                          415
    invalid  unknown service                                                                          404
    invalid  prefetch missing and no fhirServer                                                       412

It reports requests, responses by class (2xx/4xx/5xx/transport error), p50/p99 latency, the server's RSS
(VmRSS of /proc/<pid>/status) after warm-up and at the end, and after stopping the server with SIGTERM
checks in the SQLite file that every feedback entry acknowledged with a 200 is stored. Exit status 1 when
a valid request got a 5xx or a transport error, a request got an unexpected status, an acknowledged
feedback row is missing, or the run hit `--max-seconds`; 0 otherwise. No timing threshold is asserted.
The last thing printed is a Markdown block for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, never configurable


# ---------------------------------------------------------------------------------------------------
# Request mix
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Req:
    kind: str
    path: str
    body: bytes
    content_type: str = "application/json"
    expect: int = 200
    valid: bool = True
    feedback_card: str | None = None


KEEPALIVE_S = 30.0  # client idle expiry, below the server's 75 s keep-alive timeout


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1946-05-11"}


def _cpt(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code, "display": display}]}


def _preprocedure(pid: str, now: datetime) -> bytes:
    from hooks.preprocedure import prefetch as keys

    warfarin = {
        "resourceType": "MedicationRequest",
        "id": f"mr-{pid}",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-01-10",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332"}]
        },
    }
    inr = {
        "resourceType": "Observation",
        "id": f"inr-{pid}",
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "6301-6"}]},
        "effectiveDateTime": now.date().isoformat(),
        "valueQuantity": {
            "value": 2.6,
            "unit": "{INR}",
            "code": "{INR}",
            "system": "http://unitsofmeasure.org",
        },
    }
    prefetch: dict[str, Any] = {key: _bundle() for key in keys.PREFETCH}
    prefetch[keys.PATIENT] = _patient(pid)
    prefetch[keys.MEDICATION_REQUESTS] = _bundle(warfarin)
    prefetch[keys.COAG_LABS] = _bundle(inr)
    prefetch[keys.APPOINTMENTS] = None  # "no data" is valid too
    draft = {
        "resourceType": "ServiceRequest",
        "id": f"va-{pid}",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "code": _cpt("22513", "Percutaneous vertebral augmentation, thoracic (kyphoplasty)"),
    }
    context = {
        "userId": "Practitioner/soak",
        "patientId": pid,
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]},
    }
    return orjson.dumps(
        {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}
    )


def _post_keys(pid: str, prefetch_keys: list[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    procedure = {
        "resourceType": "Procedure",
        "id": f"proc-{pid}",
        "status": "completed",
        "subject": {"reference": f"Patient/{pid}"},
        "code": _cpt("22513", "Kyphoplasty T12"),
        "performedDateTime": "2026-11-20T09:00:00Z",
    }
    out: dict[str, Any] = {key: _bundle() for key in prefetch_keys}
    if "patient" in out:
        out["patient"] = _patient(pid)
    out["procedures"] = _bundle(procedure)
    out.update(extra or {})
    return out


def _postprocedure(pid: str) -> bytes:
    from hooks.postprocedure.prefetch import PREFETCH

    context = {"userId": "Practitioner/soak", "patientId": pid}
    return orjson.dumps(
        {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": context,
            "prefetch": _post_keys(pid, list(PREFETCH)),
        }
    )


def _discharge(pid: str) -> bytes:
    from hooks.discharge.prefetch import PREFETCH

    encounter = {
        "resourceType": "Encounter",
        "id": f"enc-{pid}",
        "status": "in-progress",
        "class": {"code": "IMP"},
    }
    context = {"userId": "Practitioner/soak", "patientId": pid, "encounterId": f"enc-{pid}"}
    return orjson.dumps(
        {
            "hook": "encounter-discharge",
            "hookInstance": str(uuid.uuid4()),
            "context": context,
            "prefetch": _post_keys(pid, list(PREFETCH), {"encounter": encounter}),
        }
    )


def _feedback(card: str, accepted: bool) -> bytes:
    item: dict[str, Any] = {
        "card": card,
        "outcome": "accepted" if accepted else "overridden",
        "outcomeTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if accepted:
        item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
    else:
        item["overrideReason"] = {
            "reason": {
                "system": "https://va-cds.org/fhir/CodeSystem/override-reason",
                "code": "not-applicable",
                "display": "Not applicable to this patient",
            },
            "userComment": "soak",
        }
    return orjson.dumps({"feedback": [item]})


# (weight, builder) — builders take (index, rng) and return one request.
def _mix() -> list[tuple[int, Callable[[int, random.Random], Req]]]:
    now = datetime.now(UTC)
    pre, post, dis = (
        "/cds-services/va-preprocedure-order-sign",
        "/cds-services/va-postprocedure-patient-view",
        "/cds-services/va-discharge",
    )

    def feedback(i: int, rng: random.Random) -> Req:
        card = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        service = rng.choice([pre, post, dis])
        return Req("feedback", f"{service}/feedback", _feedback(card, rng.random() < 0.5), feedback_card=card)

    def no_prefetch(i: int, rng: random.Random) -> Req:
        body = orjson.loads(_preprocedure(f"s{i}", now))
        del body["prefetch"]
        return Req("no-prefetch", pre, orjson.dumps(body), expect=412, valid=False)

    return [
        (30, lambda i, rng: Req("order-sign", pre, _preprocedure(f"s{i}", now))),
        (15, lambda i, rng: Req("patient-view", post, _postprocedure(f"s{i}"))),
        (10, lambda i, rng: Req("encounter-discharge", dis, _discharge(f"s{i}"))),
        (20, feedback),
        (
            8,
            lambda i, rng: Req(
                "malformed-json", pre, b'{"hook": "order-sign", "context": {', expect=400, valid=False
            ),
        ),
        (
            7,
            lambda i, rng: Req(
                "wrong-hook", pre, _discharge(f"s{i}").replace(b"va-discharge", b""), expect=400, valid=False
            ),
        ),
        (4, lambda i, rng: Req("text-plain", pre, b"hook=order-sign", "text/plain", expect=415, valid=False)),
        (
            3,
            lambda i, rng: Req(
                "unknown-service",
                "/cds-services/no-such-service",
                _postprocedure(f"s{i}"),
                expect=404,
                valid=False,
            ),
        ),
        (3, no_prefetch),
    ]


def build_requests(count: int, seed: int) -> list[Req]:
    rng = random.Random(seed)
    mix = _mix()
    weights = [w for w, _ in mix]
    builders = [b for _, b in mix]
    return [rng.choices(builders, weights)[0](i, rng) for i in range(count)]


# ---------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    """uvicorn in a subprocess on 127.0.0.1 with a temporary SQLite database."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / "soak.db"
        self.log = workdir / "server.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        env = {
            **os.environ,
            "VA_CDS_AUTH_MODE": "off",
            "VA_CDS_DATABASE_URL": f"sqlite:///{self.db}",
            "VA_CDS_LOG_LEVEL": "WARNING",
        }
        cmd = [
            sys.executable, "-m", "uvicorn", "cds_service.app:app",
            "--host", HOST, "--port", str(self.port),
            "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "20",
            "--timeout-keep-alive", "75",  # as `va-cds serve`: see KEEPALIVE_S below
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        """The last lines of the server log, without the (expected, counted) audit fallback records."""
        try:
            text = self.log.read_text(errors="replace")
            return "\n".join(
                [ln for ln in text.splitlines() if "audit record logged instead" not in ln][-lines:]
            )
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    classes: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    hook_latencies_ms: list[float] = field(default_factory=list)
    valid_5xx: int = 0
    valid_transport: int = 0
    unexpected: Counter[tuple[str, str]] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    sent: int = 0
    timed_out: bool = False
    examples: list[str] = field(default_factory=list)


def status_class(status: int | None) -> str:
    if status is None:
        return "transport"
    return f"{status // 100}xx"


async def run_load(base: str, requests: list[Req], concurrency: int, deadline: float, res: Results) -> None:
    queue: asyncio.Queue[Req] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    # The client drops idle connections well before the server's keep-alive timeout: otherwise a request sent
    # on a connection the server is closing at that instant fails with a transport error (a client-side race
    # that every HTTP/1.1 keep-alive client must avoid, not a server failure).
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=KEEPALIVE_S
    )
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                try:
                    req = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                status: int | None
                payload: Any = None
                try:
                    resp = await client.post(
                        req.path, content=req.body, headers={"Content-Type": req.content_type}
                    )
                    status = resp.status_code
                    if status == 200 and req.feedback_card:
                        payload = resp.json()
                except httpx.HTTPError as exc:
                    status = None
                    if len(res.examples) < 5:
                        took = time.perf_counter() - started
                        res.examples.append(f"{req.kind} after {took:.2f} s: {exc!r} {exc.__context__!r}")
                elapsed = (time.perf_counter() - started) * 1000
                res.sent += 1
                cls = status_class(status)
                res.classes[cls] += 1
                res.by_kind[(req.kind, str(status))] += 1
                res.latencies_ms.append(elapsed)
                if req.valid and req.feedback_card is None:
                    res.hook_latencies_ms.append(elapsed)
                if req.valid and cls == "5xx":
                    res.valid_5xx += 1
                if req.valid and cls == "transport":
                    res.valid_transport += 1
                if status != req.expect:
                    res.unexpected[(req.kind, str(status))] += 1
                if req.feedback_card and status == 200 and payload == {"received": 1, "stored": 1}:
                    res.acknowledged.append(req.feedback_card)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.timed_out = not queue.empty()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def stored_cards(db: Path, cards: list[str]) -> set[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found: set[str] = set()
        for i in range(0, len(cards), 500):
            chunk = cards[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found |= {
                row[0] for row in con.execute(f"SELECT card FROM feedback WHERE card IN ({marks})", chunk)
            }
        return found
    finally:
        con.close()


def count_rows(db: Path, table: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3000, help="requests to send (default 3000)")
    p.add_argument("--concurrency", type=int, default=50, help="requests in flight (default 50)")
    p.add_argument("--quick", action="store_true", help="300 requests (CI smoke run)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests before RSS is read")
    p.add_argument("--max-seconds", type=float, default=None, help="time bound of the load phase")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--keep-log", type=Path, default=None, help="copy the server log here at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    count = 300 if args.quick else args.requests
    warmup = args.warmup if args.warmup is not None else (60 if args.quick else 200)
    max_seconds = args.max_seconds or (120.0 if args.quick else 600.0)
    if not (1 <= count <= 1_000_000 and 1 <= args.concurrency <= 1000):
        print("requests must be 1..1e6 and concurrency 1..1000", file=sys.stderr)
        return 2

    requests = build_requests(count, args.seed)
    warm = build_requests(warmup, args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="va-cds-soak-") as tmp:
        server = Server(Path(tmp))
        res = Results()
        try:
            server.start()
            assert server.proc is not None
            warm_res = Results()
            asyncio.run(
                run_load(server.base, warm, args.concurrency, time.monotonic() + max_seconds, warm_res)
            )
            rss_start = rss_kib(server.proc.pid)
            started = time.monotonic()
            asyncio.run(run_load(server.base, requests, args.concurrency, started + max_seconds, res))
            duration = time.monotonic() - started
            rss_end = rss_kib(server.proc.pid)
        finally:
            exit_code = server.stop()
        acknowledged = res.acknowledged + warm_res.acknowledged
        present = stored_cards(server.db, acknowledged) if acknowledged else set()
        missing = sorted(set(acknowledged) - present)
        audit_rows = count_rows(server.db, "audit")
        hook_200 = sum(
            n
            for (kind, status), n in (res.by_kind + warm_res.by_kind).items()
            if status == "200" and kind != "feedback"
        )
        log_tail = server.tail()
        server_log = server.log.read_text(errors="replace")
        if args.keep_log:
            args.keep_log.write_text(server_log)
        audit_degraded = server_log.count("audit store unavailable")
        audit_errors = server_log.count("audit write failed")
        error_lines = [
            line for line in server_log.splitlines() if '"level":"ERROR"' in line or "Traceback" in line
        ]

    failures: list[str] = []
    if res.valid_5xx:
        failures.append(f"{res.valid_5xx} valid request(s) answered 5xx")
    if res.valid_transport:
        failures.append(f"{res.valid_transport} valid request(s) failed at the transport level")
    if res.unexpected:
        failures.append(
            "unexpected statuses: "
            + ", ".join(f"{k} → {s} ×{n}" for (k, s), n in sorted(res.unexpected.items()))
        )
    if missing:
        failures.append(
            f"{len(missing)} acknowledged feedback row(s) missing from the database, e.g. {missing[:3]}"
        )
    if res.timed_out:
        failures.append(
            f"stopped at --max-seconds {max_seconds:.0f} with {count - res.sent} request(s) unsent"
        )

    p50, p99 = percentile(res.latencies_ms, 0.5), percentile(res.latencies_ms, 0.99)
    h50, h99 = percentile(res.hook_latencies_ms, 0.5), percentile(res.hook_latencies_ms, 0.99)
    valid = sum(1 for r in requests if r.valid)
    print(f"requests: {res.sent} of {count} (valid {valid}, invalid {count - valid})")
    print(f"concurrency: {args.concurrency}")
    for cls in ("2xx", "4xx", "5xx", "transport"):
        print(f"{cls}: {res.classes.get(cls, 0)}")
    print(f"5xx on valid input: {res.valid_5xx}")
    print(f"latency ms: p50 {p50:.1f} p99 {p99:.1f} (valid hook calls: p50 {h50:.1f} p99 {h99:.1f})")
    print(f"rss KiB: start {rss_start} end {rss_end} (delta {rss_end - rss_start:+d})")
    print(f"feedback acknowledged: {len(acknowledged)}, in database: {len(present)}, missing: {len(missing)}")
    print(f"audit rows: {audit_rows} for {hook_200} answered hook calls")
    print(f"audit records logged instead of stored: {audit_degraded}; audit write errors: {audit_errors}")
    print(f"server log error lines: {len(error_lines)}")
    for line in error_lines[:5]:
        print(f"  {line[:300]}")
    print(f"server exit code after SIGTERM: {exit_code}")
    for kind_status, n in sorted(res.by_kind.items()):
        print(f"  {kind_status[0]:>20} {kind_status[1]:>9}: {n}")
    for example in res.examples:
        print(f"  transport error: {example}")

    print()
    print(
        f"**Soak** (`python -m benchmarks.soak{' --quick' if args.quick else ''}`, "
        f"{datetime.now(UTC):%Y-%m-%d}, "
        f"{os.cpu_count()} cores, uvicorn 1 worker, SQLite, loopback, concurrency {args.concurrency})"
    )
    print()
    print("| Figure | Value |")
    print("|---|---|")
    print(
        f"| Requests | {res.sent} ({valid} valid, {count - valid} invalid) in {duration:.1f} s "
        f"({res.sent / duration:.0f} req/s) |"
    )
    print(
        f"| 2xx / 4xx / 5xx / transport errors | {res.classes.get('2xx', 0)} / {res.classes.get('4xx', 0)} / "
        f"{res.classes.get('5xx', 0)} / {res.classes.get('transport', 0)} |"
    )
    print(f"| 5xx on valid input | {res.valid_5xx} |")
    print(f"| Latency p50 / p99, all requests | {p50:.1f} ms / {p99:.1f} ms |")
    print(f"| Latency p50 / p99, valid hook calls | {h50:.1f} ms / {h99:.1f} ms |")
    print(
        f"| Server RSS after warm-up → end | {rss_start / 1024:.1f} MiB → {rss_end / 1024:.1f} MiB "
        f"({(rss_end - rss_start) / 1024:+.1f} MiB) |"
    )
    print(f"| Feedback acknowledged / in the database | {len(acknowledged)} / {len(present)} |")
    print(
        f"| Audit rows / answered hook calls | {audit_rows} / {hook_200} "
        f"({audit_degraded} logged instead: store unavailable) |"
    )
    print()
    if failures:
        print("FAILED: " + "; ".join(failures))
        if log_tail:
            print("server log tail (lines cut at 300 characters):")
            for line in log_tail.splitlines():
                print("  " + line[:300])
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
