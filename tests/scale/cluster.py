"""A real multi-replica topology for tests: va-cds replicas (`va-cds serve` subprocesses on loopback
ports), HAProxy from Debian's package in front (round robin, health checks on /ready), one PostgreSQL.

Pieces:

* `Signer` — an EC P-256 key of our own, its trust file, and fresh tokens (new jti each) for any URL;
* `TcpGate` — a loopback TCP forwarder between one replica and PostgreSQL that can be cut, so that one
  replica (and only it) loses its database;
* `Replica` — `python -m cds_service.cli serve --host 127.0.0.1 --port N`, killable with SIGKILL;
* `Balancer` — `haproxy -db -f cfg`; every response says which replica served it (`X-Served-By`), and the
  stats socket says which servers are in rotation.

When HAProxy is not installed the tests skip — except in CI (`CI=true`) or with `VA_CDS_REQUIRE_HAPROXY=1`,
where that is a failure (the pattern of tests/pg_server.py and tests/pages/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.conftest import b64u, b64u_json, ec_jwk, sign
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ISS = "https://ehr.scale-test.example.org"
KID = "scale-ec-1"


def required(env: str) -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(env) == "1"


def unavailable(what: str, reason: str, env: str) -> NoReturn:
    if required(env):
        pytest.fail(f"{what} is required here (CI / {env}=1) but: {reason}")
    pytest.skip(f"{what} not available: {reason}")


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    if found is None:
        unavailable("HAProxy", "no haproxy binary (apt-get install haproxy)", "VA_CDS_REQUIRE_HAPROXY")
    return found


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Signer:
    """Our own CDS Client: one EC key, trusted through a trust file, minting single-use tokens."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def write_trust(self, path: Path) -> Path:
        doc = {"issuers": [{"iss": ISS, "jwks": {"keys": [ec_jwk(self.key, KID)]}, "algorithms": ["ES256"]}]}
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    def token(self, aud: str, jti: str | None = None) -> str:
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT", "kid": KID}
        payload = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": jti or str(uuid.uuid4())}
        signing_input = f"{b64u_json(header)}.{b64u_json(payload)}".encode()
        return f"{signing_input.decode()}.{b64u(sign('ES256', self.key, signing_input))}"

    def headers(self, aud: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(aud)}"}


class TcpGate:
    """Forwards 127.0.0.1:port → upstream until `cut()`: then it closes every connection and refuses new
    ones (a database that became unreachable for this one client); `restore()` opens it again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = (HOST, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server((HOST, self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown first: close() alone leaves the socket listening while accept() blocks on it.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Replica:
    """One va-cds replica: `va-cds serve` (the real command) on a loopback port, logging to a file."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, workers: int = 1) -> None:
        self.name = name
        self.env = dict(env)
        self.workers = workers
        self.log_path = log_dir / f"{name}.log"
        self.port = free_port()  # chosen up front: the balancer's configuration names it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VA_CDS_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "cds_service.cli", "serve", "--host", HOST, "--port", str(self.port)]
        cmd += ["--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            # Own process group: uvicorn's worker processes (--workers N) are stopped and killed with it.
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, timeout_s, f"{self.name} to be ready")

    def kill(self) -> None:
        """Crash: SIGKILL, no graceful shutdown (uvicorn's workers, if any, go with their parent's group)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # graceful: uvicorn drains, the writer commits
        try:
            self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # any worker left behind by its parent

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


HAPROXY_CFG = """\
global
    maxconn 512
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A connection refused by a dead replica is tried on another one; the request never reached it.
    retries 2
    option redispatch
    retry-on conn-failure

frontend va_cds
    bind {host}:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 250ms fall 2 rise 2
    http-response set-header X-Served-By %[srv_name]
{servers}
"""


class Balancer:
    """HAProxy in the foreground (`-db`) on a loopback port, in front of `replicas`."""

    def __init__(self, work_dir: Path, port: int) -> None:
        self.dir = work_dir
        self.sock = work_dir / "haproxy.sock"
        self.port = port  # chosen first: the replicas need the public URL before the balancer starts
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work_dir / "haproxy.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, replicas: list[Replica]) -> None:
        binary = haproxy_binary()
        servers = "\n".join(f"    server {r.name} {HOST}:{r.port} check" for r in replicas)
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(
            HAPROXY_CFG.format(sock=self.sock, host=HOST, port=self.port, servers=servers), encoding="utf-8"
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=log)
        try:
            wait_until(self._listening, 10, "haproxy to listen")
        except AssertionError:
            self.stop()
            raise AssertionError(
                f"haproxy did not start: {self.log_path.read_text(errors='replace')[-2000:]}"
            ) from None

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("haproxy exited")
        with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=1):
            return True
        return False

    def states(self) -> dict[str, str]:
        """Server name → HAProxy's status for it (UP, DOWN, ...), from the stats socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row: dict[str, Any] = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "replicas" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = str(row["status"]).split(" ")[0]
        return out

    def wait_states(self, expected: Mapping[str, str], timeout_s: float = 15.0) -> None:
        wait_until(
            lambda: all(self.states().get(k) == v for k, v in expected.items()),
            timeout_s,
            f"haproxy to report {dict(expected)} (now {self.states()})",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
