"""The shared replay table through the app itself (TestClient, no subprocesses): two app instances on one
database refuse each other's replays, and a replay table that cannot be written refuses the token with a
401 that says why — never a 500, never an accepted token."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.auth import www_authenticate
from tests.core.conftest import TEST_SERVICE, hook_body, make_settings
from tests.scale.cluster import Signer

BASE = "https://cds.example.org"
_EMPTY = {"resourceType": "Bundle", "type": "searchset", "entry": []}
BODY = hook_body(
    prefetch={"patient": {"resourceType": "Patient", "id": "p1"}, "meds": _EMPTY, "labs": _EMPTY}
)
URL = f"{BASE}/cds-services/{TEST_SERVICE.id}"


def _app(tmp_path: Path, signer: Signer) -> TestClient:
    settings = make_settings(
        tmp_path,
        auth_mode="required",
        trust_file=signer.write_trust(tmp_path / "trust.yaml"),
        public_base_url=BASE,
        patient_hash_key="replay-http-test-key",
    )
    return TestClient(create_app(settings, services=[TEST_SERVICE]))


def test_two_app_instances_on_one_database_refuse_each_others_replays(tmp_path: Path) -> None:
    signer = Signer()
    headers = {"Authorization": f"Bearer {signer.token(URL)}"}
    path = f"/cds-services/{TEST_SERVICE.id}"
    with _app(tmp_path, signer) as first, _app(tmp_path, signer) as second:
        assert first.post(path, json=BODY, headers=headers).status_code == 200
        again = second.post(path, json=BODY, headers=headers)
    assert again.status_code == 401
    assert again.headers["www-authenticate"] == www_authenticate("replayed")


def test_an_unwritable_replay_table_refuses_the_token_with_a_reason(tmp_path: Path) -> None:
    signer = Signer()
    path = f"/cds-services/{TEST_SERVICE.id}"
    with _app(tmp_path, signer) as client:
        ok = client.post(path, json=BODY, headers=signer.headers(URL))
        assert ok.status_code == 200
        engine = sa.create_engine(f"sqlite:///{tmp_path}/va-cds.db")
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE jti"))  # the claim's INSERT now fails in the database
        engine.dispose()
        refused = client.post(path, json=BODY, headers=signer.headers(URL))
        metrics = client.get("/metrics").text
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == www_authenticate("replay-check-unavailable")
    assert "replay check unavailable" in refused.headers["www-authenticate"]
    assert 'va_cds_jwt_rejections_total{reason="replay-check-unavailable"} 1.0' in metrics
