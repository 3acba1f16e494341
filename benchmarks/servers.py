"""Start an ASGI app under uvicorn in a subprocess on 127.0.0.1, wait until it answers, stop it.

The listening socket is bound here (127.0.0.1, port chosen by the kernel) and handed to uvicorn with
`--fd`, so there is no race for a port and nothing ever listens on another address.
"""

from __future__ import annotations

import contextlib
import os
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
    """`python -m uvicorn APP` on an inherited loopback socket; a context manager."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/",
        python: str = sys.executable,
    ) -> None:
        self.name = name
        self.app = app
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.python = python
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> UvicornServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(1024)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VA_CDS_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            self.python,
            "-m",
            "uvicorn",
            self.app,
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, pass_fds=(sock.fileno(),), stdout=self._log, stderr=subprocess.STDOUT
        )
        sock.close()  # the child holds its own copy
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    if client.get(self.base_url + self.ready_path).status_code < 500:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise ServerError(f"{self.name} did not answer within {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
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
