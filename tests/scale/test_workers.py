"""`va-cds serve --workers N`: refused without the shared keys; with them, N processes behave as one —
a token is accepted once whichever worker gets it, and every checklist link opens on every worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cds_service.app import create_app
from cds_service.auth import www_authenticate
from cds_service.scale import MissingSharedKeys
from cds_service.settings import Settings
from tests.pages.helpers import SERVICE_URL, checklist_link, order_sign_request
from tests.scale.cluster import ROOT, Replica, Signer


def _serve(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VA_CDS_")}
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_serve_with_two_workers_and_no_shared_keys_refuses_to_start(tmp_path: Path) -> None:
    done = _serve(["--workers", "2"], {"VA_CDS_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    assert done.returncode == 2
    assert "refusing to start with 2 workers" in done.stderr
    assert "VA_CDS_PATIENT_HASH_KEY" in done.stderr and "VA_CDS_CHECKLIST_LINK_KEY" in done.stderr
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was started or created


def test_serve_with_two_workers_names_only_the_key_still_missing(tmp_path: Path) -> None:
    done = _serve(
        ["--workers", "2"],
        {"VA_CDS_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "VA_CDS_CHECKLIST_LINK_KEY": "k" * 32},
    )
    assert done.returncode == 2
    assert "VA_CDS_PATIENT_HASH_KEY" in done.stderr and "VA_CDS_CHECKLIST_LINK_KEY (" not in done.stderr


def test_a_postgresql_url_requires_the_shared_keys_at_start_up() -> None:
    settings = Settings(database_url="postgresql://va@127.0.0.1:1/va", auth_mode="off")  # type: ignore[call-arg]
    with pytest.raises(MissingSharedKeys, match="VA_CDS_PATIENT_HASH_KEY"):
        create_app(settings)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Signer]]:
    tmp = tmp_path_factory.mktemp("workers")
    signer = Signer()
    key = "workers-test-shared-secret-" + "y" * 16
    replica = Replica(
        "w2",
        {
            "VA_CDS_DATABASE_URL": f"sqlite:///{tmp}/va-cds.db",
            "VA_CDS_AUTH_MODE": "required",
            "VA_CDS_TRUST_FILE": str(signer.write_trust(tmp / "trust.yaml")),
            "VA_CDS_PATIENT_HASH_KEY": key,
            "VA_CDS_LOG_LEVEL": "WARNING",
        },
        tmp,
        workers=2,
    )
    # Required with authentication on; the replica's own loopback URL here (no balancer in front).
    replica.env["VA_CDS_PUBLIC_BASE_URL"] = replica.url
    try:
        replica.launch()
        replica.wait_ready()
        yield replica, signer
    finally:
        replica.stop()


def test_two_workers_accept_a_token_once_and_share_checklist_links(
    two_workers: tuple[Replica, Signer],
) -> None:
    """The issue's reproduction: the same token sent 10 times to `serve --workers 2` (each on a new
    connection, so both workers get some) is accepted once."""
    replica, signer = two_workers
    url = replica.url + SERVICE_URL
    disc = replica.url + "/cds-services"
    discovery = httpx.get(disc, headers=signer.headers(disc), timeout=20).json()
    body = order_sign_request(discovery)
    token = signer.token(url)
    statuses = []
    for _ in range(10):
        with httpx.Client(timeout=20) as client:  # a new connection each time
            r = client.post(
                url,
                json={**body, "hookInstance": str(uuid.uuid4())},
                headers={"Authorization": f"Bearer {token}"},
            )
        statuses.append(r.status_code)
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == www_authenticate("replayed")
    assert statuses.count(200) == 1 and statuses.count(401) == 9, statuses

    links = []
    for _ in range(4):
        with httpx.Client(timeout=20) as client:
            r = client.post(
                url, json={**body, "hookInstance": str(uuid.uuid4())}, headers=signer.headers(url)
            )
            assert r.status_code == 200
            links.append(checklist_link(r.json()["cards"]))
    for link in links:
        for _ in range(3):
            with httpx.Client(timeout=20) as client:  # new connections: whichever worker accepts it
                assert client.get(link).status_code == 200
