"""`fhir_servers` in the trust file: which FHIR bases a SMART launch may name as `iss`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cds_service.auth.trust import TrustConfig, normalise_fhir_base

JWKS = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "sandbox-jwks.json").read_text())


def _config(servers: Any) -> TrustConfig:
    return TrustConfig.from_mapping(
        {"issuers": [{"iss": "https://ehr.test", "jwks": JWKS, "fhir_servers": servers}]}
    )


def test_listed_bases_are_normalised_for_an_exact_match() -> None:
    config = _config(["https://EHR.example.org:443/fhir/", "http://127.0.0.1:8123/fhir"])
    assert config.fhir_servers == {"https://ehr.example.org/fhir", "http://127.0.0.1:8123/fhir"}
    assert normalise_fhir_base("https://ehr.example.org/fhir") in config.fhir_servers
    for other in (
        "https://ehr.example.org/fhir2",
        "https://ehr.example.org:8443/fhir",
        "http://ehr.example.org/fhir",
        "https://ehr.example.org",
        "https://ehr.example.org.evil/fhir",
    ):
        assert normalise_fhir_base(other) not in config.fhir_servers, other


@pytest.mark.parametrize(
    "bad",
    [
        "http://ehr.example.org/fhir",  # plain http off this machine: a token could be read on the path
        "https://user:pw@ehr.example.org/fhir",
        "https://ehr.example.org/fhir?tenant=a",
        "ftp://ehr.example.org/fhir",
        42,
        {"url": "https://ehr.example.org/fhir"},
    ],
)
def test_malformed_entries_stop_start_up_with_the_problem_named(bad: Any) -> None:
    with pytest.raises(ValueError, match="fhir_servers"):
        _config([bad] if not isinstance(bad, dict) else bad)


def test_no_fhir_servers_means_no_smart_launch_is_accepted() -> None:
    config = TrustConfig.from_mapping({"issuers": [{"iss": "https://ehr.test", "jwks": JWKS}]})
    assert config.fhir_servers == frozenset()


def test_env_list_counts_only_with_authentication_off(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cds_service.settings import Settings
    from cds_service.smart.routes import allowed_fhir_bases

    def bases(**kw: Any) -> frozenset[str]:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", **kw)  # type: ignore[call-arg]
        return allowed_fhir_bases(SimpleNamespace(settings=settings))  # type: ignore[arg-type]

    assert bases(auth_mode="off", fhir_servers="https://a.example/fhir/, http://127.0.0.1:9/r4") == {
        "https://a.example/fhir",
        "http://127.0.0.1:9/r4",
    }
    assert bases(auth_mode="required", fhir_servers="https://a.example/fhir") == frozenset()
    with pytest.raises(ValueError, match="VA_CDS_FHIR_SERVERS"):
        bases(auth_mode="off", fhir_servers="http://ehr.example.org/fhir")
