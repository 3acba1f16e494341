"""Checklist link tokens never reach the log through `uvicorn.access` (issue 16).

The review found that `configure_logging` re-enabled uvicorn's access logger by attaching our handler to it,
so `uvicorn cds_service.app:app` (access log on by default) wrote every checklist URL, token included, to the
log. Here uvicorn runs exactly that way, with its default logging configuration, in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.hardening.test_fhir_wedge import ROOT
from tests.net import free_port

TOKEN = "chk-SECRET-capability-7f3a9c2e41b8"


def test_uvicorn_access_log_stays_silent(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "VA_CDS_AUTH_MODE": "off",
        "VA_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        "VA_CDS_LOG_LEVEL": "INFO",
    }
    cmd = [sys.executable, "-m", "uvicorn", "cds_service.app:app", "--host", "127.0.0.1", "--port", str(port)]
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
        page = httpx.get(f"{base}/checklist/{TOKEN}", timeout=10)
        assert page.status_code == 404  # not a genuine token; the URL is what matters
        httpx.get(f"{base}/health?probe={TOKEN}", timeout=10)
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text(errors="replace")
    assert "Application startup complete" in text  # the log is being written at INFO
    assert TOKEN not in text
