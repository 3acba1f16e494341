"""HealthChain, the peer framework, in a virtualenv of its own (`--peer`), driven through `peer_worker.py`.

HealthChain 0.16 pins fastapi, httpx and fhir.resources below the versions va-cds uses; installing it into
the project's `.venv` would downgrade them under everybody's feet. So it is installed with pip into a
separate venv (default `~/.cache/va-cds-bench/peer-venv`, or `$VA_CDS_BENCH_PEER_VENV`) and never becomes
a dependency of va-cds. The worker runs in that venv, and this side sends it `run` commands so the two
services are timed alternately in the same run.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

import orjson

WORKER = Path(__file__).resolve().parent / "peer_worker.py"
INSTALL_TIMEOUT_S = 600


class PeerUnavailable(RuntimeError):
    """HealthChain cannot be installed or started here (the case is skipped with this reason)."""


def venv_dir() -> Path:
    env = os.environ.get("VA_CDS_BENCH_PEER_VENV")
    return Path(env) if env else Path.home() / ".cache" / "va-cds-bench" / "peer-venv"


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"`{' '.join(cmd[:4])} ...` took more than {timeout:.0f} s") from exc


def ensure_peer_python(log: list[str]) -> str:
    """The peer venv's python with healthchain importable, creating the venv on first use."""
    directory = venv_dir()
    python = directory / "bin" / "python"
    check = [str(python), "-c", "import healthchain.gateway, healthchain.io.adapters.cdsfhiradapter"]
    if python.exists() and _run(check, 120).returncode == 0:
        return str(python)
    base = getattr(sys, "_base_executable", sys.executable)
    log.append(f"peer: creating {directory} and installing healthchain (pip, up to 10 min)")
    made = _run([base, "-m", "venv", str(directory)], 300)
    if made.returncode != 0:
        raise PeerUnavailable(f"cannot create venv: {made.stderr.strip()[-300:]}")
    pip = _run([str(python), "-m", "pip", "install", "--quiet", "healthchain", "orjson"], INSTALL_TIMEOUT_S)
    if pip.returncode != 0:
        raise PeerUnavailable(f"pip install healthchain failed: {pip.stderr.strip()[-400:]}")
    if _run(check, 120).returncode != 0:
        raise PeerUnavailable("healthchain installed but its CDS Hooks modules do not import")
    return str(python)


class PeerWorker:
    """The HealthChain worker subprocess; `time_one()` returns the seconds of one request it timed."""

    def __init__(self, python: str, body_file: Path, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            [python, str(WORKER), str(body_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._next()
        if not first.startswith("ready "):
            err = self.proc.stderr.read()[-500:] if self.proc.stderr and self.proc.poll() is not None else ""
            self.close()
            raise PeerUnavailable(f"healthchain worker did not start: {first!r} {err}")
        self.info: dict[str, object] = orjson.loads(first.removeprefix("ready "))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _next(self) -> str:
        try:
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty as exc:
            raise PeerUnavailable(f"healthchain worker silent for {self.timeout_s:.0f} s") from exc
        if line is None:
            raise PeerUnavailable("healthchain worker exited")
        return line

    def time_one(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self._next())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> PeerWorker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
