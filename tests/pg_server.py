"""Start a throw-away PostgreSQL server for tests (importable by any test package).

Usage::

    from tests.pg_server import start_postgres, PostgresUnavailable
    url, stop = start_postgres(tmp_dir)   # raises PostgresUnavailable when no server can run
    ...
    stop()

`launch_postgres()` returns the `PostgresServer` handle itself, which can also `kill()` the server
with SIGKILL (crash simulation) and `start()` it again on the same data directory and port.

Where the binaries come from, first match wins: `$VA_CDS_PG_BINDIR`; `pg_config --bindir`;
`pg_ctl` on PATH; the newest `/usr/lib/postgresql/<ver>/bin` (Debian's `postgresql` package, which
CI installs); `/usr/local/pgsql/bin`.

PostgreSQL refuses to run as root. When the tests run as root the server runs as
`$VA_CDS_PG_USER` (default `nobody`; created with useradd if missing) through `runuser`, in a
directory that user owns. It listens on 127.0.0.1 on a free port, uses trust authentication for
the `postgres` superuser, and keeps fsync (unless asked not to) and synchronous_commit on: the
crash tests rely on them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.net import free_port

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bin_dir", "launch_postgres", "start_postgres"]

_START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (no binaries, no unprivileged user, start failed)."""


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""

    def usable(d: Path) -> bool:
        return all(os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))

    if env := os.environ.get("VA_CDS_PG_BINDIR"):
        # An explicit choice is not second-guessed: if it is wrong, say so rather than fall back.
        return Path(env) if usable(Path(env)) else None
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
    if pg_ctl := shutil.which("pg_ctl"):
        candidates.append(Path(pg_ctl).resolve().parent)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates.append(Path("/usr/local/pgsql/bin"))
    return next((c for c in candidates if usable(c)), None)


def _server_user() -> str | None:
    """The unprivileged account to run as, or None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("VA_CDS_PG_USER", "nobody")
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PostgresUnavailable(f"user {name!r} does not exist and useradd is missing") from None
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"could not create user {name!r}: {done.stderr.strip()}") from None
    if shutil.which("runuser") is None and shutil.which("su") is None:
        raise PostgresUnavailable("running as root but neither runuser nor su is available")
    return name


def _alive(pid: int) -> bool:
    """True while a process exists and is not a zombie (PID 1 may not reap orphaned postgres)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


@dataclass
class PostgresServer:
    """A running (or stopped) test server on one data directory and port."""

    bin_dir: Path
    base_dir: Path
    user: str | None
    port: int = field(default_factory=free_port)
    #: False trades crash safety for speed (CREATE DATABASE, shutdown); keep True for crash tests.
    fsync: bool = True
    _running: bool = False

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(
        self, args: Sequence[str], timeout: float = _START_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.user is not None:
            if runuser := shutil.which("runuser"):
                cmd = [runuser, "-u", self.user, "--", *cmd]
            else:
                import shlex

                cmd = ["su", self.user, "-s", "/bin/sh", "-c", shlex.join(cmd)]
        # cwd: the server user may not be allowed into the caller's working directory.
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base_dir)

    def initdb(self) -> None:
        done = self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                # Only skips initdb's own final fsync of the template files; the running server
                # still fsyncs WAL at every commit, which is what the durability tests rely on.
                "--no-sync",
            ]
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        """Start (or restart after kill()) the server; waits until it accepts connections."""
        for _attempt in range(3):
            options = (
                f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 "
                f"-c fsync={'on' if self.fsync else 'off'} -c synchronous_commit=on -c max_connections=50"
            )
            done = self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-o",
                    options,
                    "start",
                ],
                timeout=_START_TIMEOUT_S + 10,
            )
            if done.returncode == 0:
                self._running = True
                return
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            if "could not bind" in log or "already in use" in log:
                self.port = free_port()  # lost the race for the port: try another
                continue
            break
        raise PostgresUnavailable(
            f"pg_ctl start failed: {done.stderr.strip() or done.stdout.strip()}\n{log[-2000:]}"
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and every backend, as a power cut would leave it.

        Anything committed must then come back through WAL replay on the next start().
        """
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("server is not running")
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(v) for v in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres processes {victims} did not die")
            time.sleep(0.05)
        if _alive(pid) is False and Path(f"/proc/{pid}").exists():
            # A zombie postmaster (nobody reaps it here) still "exists" for kill(pid, 0), and
            # postgres would refuse to start over its lock files: remove the stale ones.
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            for lock in self.base_dir.glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)
        self._running = False

    def stop(self) -> None:
        """Stop the server (if running) and delete its files. Safe to call twice."""
        if self._running:
            done = self._run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
            )
            if done.returncode != 0 and self.postmaster_pid() is not None:
                with contextlib.suppress(RuntimeError):
                    self.kill()
            self._running = False
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)


def _base_dir(tmp_dir: Path, user: str | None) -> Path:
    """A fresh directory the server user owns and can reach."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="pg-", dir=tmp_dir))
    if user is None:
        return base
    entry = pwd.getpwnam(user)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    # pytest's tmp dirs are 0700 root: the server user cannot traverse them. Then use the
    # world-writable temp dir instead of loosening permissions on someone else's directory.
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-w", str(base), "-a", "-x", str(base)]
        if shutil.which("runuser")
        else ["su", user, "-s", "/bin/sh", "-c", f"test -w '{base}' -a -x '{base}'"],
        capture_output=True,
    )
    if probe.returncode == 0:
        return base
    shutil.rmtree(base, ignore_errors=True)
    base = Path(tempfile.mkdtemp(prefix="va-cds-pg-"))
    os.chown(base, entry.pw_uid, entry.pw_gid)
    return base


def launch_postgres(tmp_dir: Path | str, *, fsync: bool = True) -> PostgresServer:
    """initdb + start a server; raises PostgresUnavailable (and cleans up) when that is impossible.

    `fsync=False` is only for servers that are never crashed (faster CREATE DATABASE and stop).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: install Debian's postgresql"
            f" or set VA_CDS_PG_BINDIR (now {os.environ.get('VA_CDS_PG_BINDIR')!r})"
        )
    user = _server_user()
    server = PostgresServer(bin_dir=bin_dir, base_dir=_base_dir(Path(tmp_dir), user), user=user, fsync=fsync)
    try:
        server.initdb()
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def start_postgres(tmp_dir: Path | str) -> tuple[str, Callable[[], None]]:
    """Start a server; return its SQLAlchemy URL (database `postgres`) and a stop callable."""
    server = launch_postgres(tmp_dir)
    return server.url, server.stop
