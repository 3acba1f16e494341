"""The FHIR wedge (issue 16): one caller's stalled burst must not stop FHIR fetching for everyone.

Reproduces the review's finding with real processes: va-cds under uvicorn in a subprocess (auth off, a 1 s
FHIR deadline, the fault server's bases allowlisted), the fault-injecting FHIR server on 127.0.0.1 in this
process.

1. Four concurrent order-sign calls whose 14 keys are answered with large searchset pages (4 MB, 5 pages each,
   `next` links) — the byte budget cuts them short.
2. Two bursts of 40 concurrent calls against a server that never answers: 560 fetches per burst, far more
   than the connection pool holds. Before the fix every task still waiting for a pooled connection was
   cancelled at the deadline, and some cancelled requests left their pool slot taken for ever
   (encode/httpcore#1093): from then on every fetch of every caller failed with `sys.data-unavailable`
   while `/ready` said 200.
3. The next caller, against a healthy server, must get every key fetched (the server sees all 14 queries)
   and no `sys.data-unavailable`; `/ready` stays 200.

The test asserts outcomes a user would notice, not timings (a hang would hit the client's 60 s timeout).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hooks.preprocedure import prefetch as keys
from tests.hardening.fault_server import FaultServer
from tests.hardening.test_fhir_faults import URL, by_rule, hook_call
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
BURST = 40
BURSTS = 2


@pytest.fixture
def fhir() -> Iterator[FaultServer]:
    with FaultServer(hang_limit_s=30) as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, fhir: FaultServer) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "VA_CDS_AUTH_MODE": "off",
        "VA_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "VA_CDS_FHIR_DEADLINE_S": "1.0",
        "VA_CDS_FHIR_SERVERS": ",".join(fhir.reserve(8)),
        "VA_CDS_PUBLIC_BASE_URL": base,
        "VA_CDS_LOG_LEVEL": "WARNING",
    }
    cmd = [
        sys.executable, "-m", "uvicorn", "cds_service.app:app",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("va-cds did not start: " + log.read_text(errors="replace"))
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _calls(client: httpx.AsyncClient, fhir_base: str, count: int) -> list[dict[str, Any]]:
    responses = await asyncio.gather(*(client.post(URL, json=hook_call(fhir_base)) for _ in range(count)))
    failed = [r.text[:200] for r in responses if r.status_code != 200]
    assert not failed, failed
    return [r.json() for r in responses]


def test_stalled_burst_does_not_wedge_fetching(service: str, fhir: FaultServer) -> None:
    async def scenario() -> None:
        limits = httpx.Limits(max_connections=BURST + 10)
        async with httpx.AsyncClient(base_url=service, timeout=60, limits=limits) as client:
            big = fhir.plan("big-pages", page_bytes=4 * 1024 * 1024, pages=5)
            for payload in await _calls(client, big, 4):
                assert "sys.data-unavailable" in by_rule(payload)  # cut short: never judged on part of it
            for _ in range(BURSTS):
                stalled = fhir.plan("timeout")
                for payload in await _calls(client, stalled, BURST):
                    assert "sys.data-unavailable" in by_rule(payload)

            healthy = fhir.plan("none")
            payload = (await _calls(client, healthy, 1))[0]
            assert len(fhir.seen(healthy)) == len(keys.PREFETCH), "the next caller's keys were not fetched"
            cards = by_rule(payload)
            assert "sys.data-unavailable" not in cards, cards["sys.data-unavailable"]["detail"]
            assert "pre.coag.labs-missing" in cards  # the data really was read: empty labs are missing
            assert (await client.get("/ready")).status_code == 200

    asyncio.run(scenario())
