"""Loopback ports for the servers tests start (va-cds under uvicorn, PostgreSQL, HAProxy, stubs)."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (a server started on it may still lose a race: retry then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
