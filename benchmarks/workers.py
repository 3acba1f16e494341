"""Case `workers` (issue 17): va-cds with 1 and 2 worker processes behind the same load generator.

Every request carries a bearer token of its own (a fresh `jti`, minted before the phase), so every call pays
what a production call pays: signature check plus the atomic claim in the shared `jti` table. Measured in one
run, on the same machine:

* saturation (closed loop): throughput and p50/p99 of the 100-resource order-sign for va-cds with 1 and 2
  workers (`va-cds serve --workers N`, the real command), and for the minimal FastAPI endpoint with 1 and 2
  uvicorn workers, so the throughput ratio va-cds / floor is recorded per worker count; subjects interleaved,
  order rotated each round;
* p99 at a fixed 100 req/s with the shared replay table on SQLite and on PostgreSQL (2 workers each);
* the replay claim's own cost per call (`JtiStore.claim`, in-process, on both databases).

The load generator runs on the same cores as the servers (said in the output): with 2 cores, 2 workers and
the generator compete, which is why the target for 2 workers is ≥ 1.3× and not 2×.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks import data, loadgen
from benchmarks.cases import SHARED_CPU_NOTE, Config, _cores, error_kinds
from benchmarks.report import CaseResult, Target, fmt
from benchmarks.stats import percentile, ratio

ISS = "https://ehr.bench.example.org"
KID = "bench-es256"
PUBLIC = "http://va-cds.bench.invalid"  # VA_CDS_PUBLIC_BASE_URL: the audience every token names
SHARED_KEY = "bench-shared-key-0123456789abcdef0123456789"


class Signer:
    """A CDS Client of our own: an ES256 key, a trust file for it, and single-use tokens."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def write_trust(self, path: Path) -> Path:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": KID, "use": "sig"})
        doc = {"issuers": [{"iss": ISS, "jwks": {"keys": [jwk]}, "algorithms": ["ES256"]}]}
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    def tokens(self, aud: str, n: int) -> list[str]:
        now = int(time.time())
        claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 600}
        return [
            jwt.encode(
                {**claims, "jti": str(uuid.uuid4())}, self.key, algorithm="ES256", headers={"kid": KID}
            )
            for _ in range(n)
        ]


def _requests(port: int, path: str, body: bytes, tokens: list[str]) -> list[bytes]:
    return [
        loadgen.build_request("127.0.0.1", port, path, body, {"Authorization": f"Bearer {t}"}) for t in tokens
    ]


def _merge(results: list[loadgen.LoadResult]) -> dict[str, Any]:
    """One subject's phases together: throughput over their total time, percentiles over all latencies."""
    ms = [x * 1000 for r in results for x in r.latencies_s]
    elapsed = sum(r.elapsed_s for r in results)
    kinds: dict[str, int] = {}
    for r in results:
        for k, n in r.error_kinds.items():
            kinds[k] = kinds.get(k, 0) + n
    return {
        "ok": len(ms),
        "errors": sum(r.errors for r in results),
        "error_kinds": kinds,
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "throughput_rps": round(len(ms) / elapsed, 1) if elapsed else 0.0,
        # The generator's own CPU (it shares the cores): what is left for the servers shows in this.
        "client_cpu_pct": round(100 * sum(r.client_cpu_s for r in results) / elapsed, 1) if elapsed else 0.0,
    }


def _claim_cost(url: str, calls: int) -> dict[str, float]:
    """Median and p99 (ms) of one `JtiStore.claim` (a committed insert) on `url`, in-process."""
    from cds_service.persistence import Store
    from cds_service.persistence.jti import JtiStore

    store = Store(url)
    try:
        store.upgrade()
        jti = JtiStore(store)
        now = time.time()
        for i in range(10):  # warm-up: connection, statement cache
            jti.claim(ISS, f"warm-{i}-{uuid.uuid4()}", now + 300, now)
        times = []
        for _ in range(calls):
            key = str(uuid.uuid4())
            t0 = time.perf_counter()
            claimed = jti.claim(ISS, key, now + 300, now)
            times.append((time.perf_counter() - t0) * 1000)
            if not claimed:
                raise RuntimeError("a fresh jti was refused: the replay table is broken")
    finally:
        store.close()
    return {"median_ms": round(percentile(times, 50), 3), "p99_ms": round(percentile(times, 99), 3)}


def case_workers(cfg: Config) -> CaseResult:
    from benchmarks.servers import UvicornServer
    from tests.pg_server import PostgresUnavailable, launch_postgres

    res = CaseResult("workers", "1 vs 2 workers at saturation; shared replay table on SQLite and PostgreSQL")
    w = data.build_workload(cfg.http_body_resources)
    path = f"/cds-services/{data.SERVICE_ID}"
    aud = PUBLIC + path
    signer = Signer()
    figures: dict[str, Any] = {}
    pg_note = ""
    with tempfile.TemporaryDirectory(prefix="va-cds-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        base_env = {
            "VA_CDS_AUTH_MODE": "required",
            "VA_CDS_TRUST_FILE": str(signer.write_trust(tmp / "trust.yaml")),
            "VA_CDS_PATIENT_HASH_KEY": SHARED_KEY,
            "VA_CDS_PUBLIC_BASE_URL": PUBLIC,
            "VA_CDS_LOG_LEVEL": "WARNING",
        }

        def va_cds(name: str, workers: int, db_url: str) -> UvicornServer:
            return UvicornServer(
                name,
                "",
                env={**base_env, "VA_CDS_DATABASE_URL": db_url},
                ready_path="/health",
                module="cds_service.cli",
                module_args=("serve", "--workers", str(workers)),
            )

        subjects = {
            "va-cds 1w": va_cds("va-cds-1w", 1, f"sqlite:///{tmp}/w1.db"),
            "va-cds 2w": va_cds("va-cds-2w", 2, f"sqlite:///{tmp}/w2.db"),
            "floor 1w": UvicornServer("floor-1w", "benchmarks.floor_app:app", ready_path="/health"),
            "floor 2w": UvicornServer(
                "floor-2w", "benchmarks.floor_app:app", ready_path="/health", workers=2
            ),
        }
        for server in subjects.values():
            stack.enter_context(server)
        pg_server = None
        try:
            pg_server = launch_postgres(tmp / "pg")
            stack.callback(pg_server.stop)
            pg_url = pg_server.create_database("bench")
            subjects["va-cds 2w pg"] = stack.enter_context(va_cds("va-cds-2w-pg", 2, pg_url))
        except PostgresUnavailable as exc:
            pg_note = f"PostgreSQL not available here ({str(exc)[:160]}): its figures are missing"

        budget = int(700 * cfg.workers_duration_s) + 50  # more than any subject answers in one phase

        async def drive() -> None:
            for server in subjects.values():
                # Concurrent, on several connections: every worker process gets warm, not just the first.
                warm = _requests(server.port, path, w.body, signer.tokens(aud, 120))
                await loadgen.closed_loop(
                    "127.0.0.1", server.port, warm, concurrency=8, duration_s=30.0, max_requests=120
                )
            saturation: dict[str, list[loadgen.LoadResult]] = {n: [] for n in subjects if "pg" not in n}
            order = list(saturation)
            for round_no in range(cfg.workers_rounds):
                shift = round_no % len(order)
                for name in order[shift:] + order[:shift]:
                    port = subjects[name].port
                    raws = _requests(port, path, w.body, signer.tokens(aud, budget))
                    saturation[name].append(
                        await loadgen.closed_loop(
                            "127.0.0.1",
                            port,
                            raws,
                            concurrency=cfg.workers_concurrency,
                            duration_s=cfg.workers_duration_s,
                            max_requests=budget,
                        )
                    )
                    await asyncio.sleep(0.3)
            figures["saturation"] = {n: _merge(r) for n, r in saturation.items()}
            fixed: dict[str, Any] = {}
            for name in ("va-cds 2w", "va-cds 2w pg"):
                if name not in subjects:
                    continue
                port = subjects[name].port
                n = int(cfg.http_rate * cfg.http_duration_s)
                raws = _requests(port, path, w.body, signer.tokens(aud, n))
                r = await loadgen.fixed_rate(
                    "127.0.0.1", port, raws, rate=cfg.http_rate, duration_s=cfg.http_duration_s
                )
                fixed[name] = r.as_dict()
                await asyncio.sleep(0.3)
            figures["fixed_rate"] = fixed

        asyncio.run(drive())
        # In-process, with every server stopped: the claim alone, on each database.
        for server in list(subjects.values()):
            server.stop()
        claims = {"sqlite": _claim_cost(f"sqlite:///{tmp}/claims.db", cfg.workers_claim_calls)}
        if pg_server is not None:
            claims["postgresql"] = _claim_cost(pg_server.create_database("claims"), cfg.workers_claim_calls)
        figures["replay_claim"] = claims

    sat = figures["saturation"]
    fixed = figures["fixed_rate"]
    scale = ratio(sat["va-cds 2w"]["throughput_rps"], sat["va-cds 1w"]["throughput_rps"])
    floor_scale = ratio(sat["floor 2w"]["throughput_rps"], sat["floor 1w"]["throughput_rps"])
    per_worker = {
        n: ratio(sat[f"va-cds {n}w"]["throughput_rps"], sat[f"floor {n}w"]["throughput_rps"]) for n in (1, 2)
    }
    res.lines += [
        f"workers: order-sign of {w.resources} resources ({len(w.body) / 1e3:.0f} kB), a fresh ES256 token "
        "per request (signature + shared jti claim on every call); va-cds via `va-cds serve --workers N`, "
        "floor via uvicorn --workers N; SQLite unless marked pg",
        SHARED_CPU_NOTE.format(cores=_cores()),
        f"workers: saturation = closed loop, concurrency {cfg.workers_concurrency}, {cfg.workers_rounds} × "
        f"{cfg.workers_duration_s:g} s per subject, order rotated each round",
        f"workers: {'subject':<16}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>8}{'client CPU':>12}",
    ]
    for name, d in sat.items():
        res.lines.append(
            f"workers: {name:<16}{fmt(d['p50_ms']):>9}{fmt(d['p99_ms']):>9}{d['throughput_rps']:>9}"
            f"{d['errors']:>8}{d['client_cpu_pct']:>11}%" + error_kinds(d)
        )
    res.lines += [
        f"workers: throughput 2 workers / 1 worker: va-cds {fmt(scale)}×, floor {fmt(floor_scale)}×",
        f"workers: throughput va-cds / floor: 1 worker {fmt(per_worker[1])}×, "
        f"2 workers {fmt(per_worker[2])}×",
    ]
    for name, d in fixed.items():
        db = "PostgreSQL" if "pg" in name else "SQLite"
        res.lines.append(
            f"workers: fixed {cfg.http_rate:g} req/s, {cfg.http_duration_s:g} s, 2 workers, replay table on "
            f"{db}: p50 {fmt(d['p50_ms'])} ms, p99 {fmt(d['p99_ms'])} ms, errors {d['errors']}"
            + error_kinds(d)
        )
    for db, c in figures["replay_claim"].items():
        res.lines.append(
            f"workers: replay claim (one committed INSERT … ON CONFLICT on {db}, in-process): median "
            f"{fmt(c['median_ms'])} ms, p99 {fmt(c['p99_ms'])} ms per call"
        )
    if pg_note:
        res.lines.append(f"workers: {pg_note}")
    errors = sum(d["errors"] for d in sat.values()) + sum(d["errors"] for d in fixed.values())
    res.targets.append(Target("workers: va-cds throughput, 2 workers / 1 worker", scale, 1.3, "min", "×"))
    for name, d in fixed.items():
        db = "PostgreSQL" if "pg" in name else "SQLite"
        res.targets.append(
            Target(f"workers: p99 at {cfg.http_rate:g} req/s, jti on {db}", d["p99_ms"], 50.0, "max", " ms")
        )
    res.targets.append(Target("workers: errors (all phases)", float(errors), 0.0, "max", ""))
    res.data = {
        "resources": w.resources,
        "concurrency": cfg.workers_concurrency,
        "throughput_ratio_2w_1w": round(scale, 3),
        "floor_throughput_ratio_2w_1w": round(floor_scale, 3),
        "va_cds_over_floor_throughput": {f"{n}w": round(v, 3) for n, v in per_worker.items()},
        **figures,
    }
    for name, d in sat.items():
        res.table.append(
            (
                f"saturation {name}: req/s, p50 / p99 ms",
                f"{d['throughput_rps']}, {fmt(d['p50_ms'])} / {fmt(d['p99_ms'])}",
            )
        )
    res.table += [
        ("throughput 2w / 1w (va-cds; floor)", f"{fmt(scale)}×; {fmt(floor_scale)}×"),
        ("throughput va-cds / floor (1w; 2w)", f"{fmt(per_worker[1])}×; {fmt(per_worker[2])}×"),
    ]
    for name, d in fixed.items():
        res.table.append(
            (f"{cfg.http_rate:g} req/s {name}: p50 / p99 ms", f"{fmt(d['p50_ms'])} / {fmt(d['p99_ms'])}")
        )
    for db, c in figures["replay_claim"].items():
        res.table.append(
            (f"replay claim on {db}: median / p99 ms", f"{fmt(c['median_ms'])} / {fmt(c['p99_ms'])}")
        )
    res.table.append(("load generator", "shares the same cores as the servers"))
    return res
