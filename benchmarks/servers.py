"""Start an ASGI app under uvicorn in a subprocess on 127.0.0.1, wait until it answers, stop it.

uvicorn binds `--host 127.0.0.1 --port N` itself, as in production: N is a port the kernel just handed
out on 127.0.0.1 (bind to port 0, read it, close), retried if another process takes it meanwhile.
Not `--fd`: uvicorn wraps an inherited descriptor as an AF_UNIX socket, so asyncio never sets TCP_NODELAY
on its connections and every response waits out a ~40 ms delayed ACK — a harness artefact, not the app.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A benchmark server did not start."""


class UvicornServer:
    """`python -m uvicorn APP --host 127.0.0.1 --port N` (or another loopback server); a context manager."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/",
        python: str = sys.executable,
        module: str | None = None,
        module_args: tuple[str, ...] = (),
        workers: int = 1,
    ) -> None:
        """`app` is an ASGI app for uvicorn (with `workers` processes); or `module` is a
        `python -m MODULE *module_args --port N` server (e.g. `cds_service.cli serve --workers 2`)."""
        self.name = name
        self.app = app
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.python = python
        self.module = module
        self.module_args = module_args
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_log = ""
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> UvicornServer:
        for attempt in range(attempts):
            try:
                return self._start_once(timeout_s)
            except ServerError:
                if attempt == attempts - 1 or "address already in use" not in self.last_log.lower():
                    raise
        raise ServerError(f"{self.name} did not start")  # unreachable: the loop returns or raises

    def _start_once(self, timeout_s: float) -> UvicornServer:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VA_CDS_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = (
            [self.python, "-m", self.module, *self.module_args, "--port", str(self.port)]
            if self.module
            else [
                self.python,
                "-m",
                "uvicorn",
                self.app,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                # As `va-cds serve` runs: EHRs keep connections open between calls (cds_service/cli.py).
                "--timeout-keep-alive",
                "75",
                "--workers",
                str(self.workers),
            ]
        )
        self._log.seek(0)
        self._log.truncate()
        # Own process group: uvicorn's worker processes stop with their parent (see _stop_process).
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.last_log = self.log_tail()
                    code, self.proc = self.proc.returncode, None
                    raise ServerError(f"{self.name} exited with status {code}: {self.last_log}")
                try:
                    if client.get(self.base_url + self.ready_path).status_code < 500:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.last_log = self.log_tail()
        self._stop_process()
        raise ServerError(f"{self.name} did not answer within {timeout_s:.0f} s: {self.last_log}")

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        return ""

    def _stop_process(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # a worker its parent left behind
        self.proc = None

    def stop(self) -> None:
        self._stop_process()
        with contextlib.suppress(OSError):
            self._log.close()
            os.unlink(self._log.name)

    def __enter__(self) -> UvicornServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running(*servers: UvicornServer) -> Iterator[tuple[UvicornServer, ...]]:
    """Start several servers; stop every one that started, whatever happens."""
    started: list[UvicornServer] = []
    try:
        for s in servers:
            started.append(s.start())
        yield tuple(started)
    finally:
        for s in reversed(started):
            s.stop()
