"""Trust configuration: file format, validation errors, the sandbox preset and the real sandbox tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml

from cds_service.auth import AuthError, JwtVerifier, TrustConfig, load_trust
from cds_service.settings import Settings
from tests.shared_paths import FIXTURES

from .conftest import Keys, ec_jwk, rsa_jwk

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


def _sandbox_requests() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted((FIXTURES / "sandbox-requests").glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "request" in doc:
            out.append((path.stem, doc))
        elif isinstance(doc, dict):
            out.extend(
                (f"{path.stem}-{k}", v) for k, v in doc.items() if isinstance(v, dict) and "request" in v
            )
    return out


SANDBOX_REQUESTS = _sandbox_requests()


def _settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


def _write(tmp_path: Path, doc: Any, name: str = "trust.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def test_nothing_trusted_by_default() -> None:
    assert load_trust(_settings()).is_empty


def test_sandbox_preset() -> None:
    trust = load_trust(_settings(trust_preset="sandbox"))
    issuer = trust.issuer(SANDBOX_ISS)
    assert issuer is not None and list(trust.issuers) == [SANDBOX_ISS]
    assert issuer.jku == (SANDBOX_JKU,)
    assert set(issuer.static_keys) == {"44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"}
    assert issuer.algorithms == frozenset({"ES384"})
    # The packaged copy is the fixture the sandbox actually publishes.
    packaged = Path(__file__).parents[2] / "cds_service" / "trust_presets" / "sandbox-jwks.json"
    assert json.loads(packaged.read_text()) == json.loads((FIXTURES / "sandbox-jwks.json").read_text())


def test_at_least_one_sandbox_request_fixture() -> None:
    assert len(SANDBOX_REQUESTS) >= 7


@pytest.mark.parametrize(("name", "req"), SANDBOX_REQUESTS, ids=[n for n, _ in SANDBOX_REQUESTS])
def test_real_sandbox_tokens_verify_with_preset(name: str, req: dict[str, Any]) -> None:
    header = req["request"]["headers"]["Authorization"]
    decoded = req["jwt_decoded"]["payload"]
    trust = load_trust(_settings(trust_preset="sandbox"))

    async def scenario() -> None:
        with respx.mock() as router:  # the packaged JWKS suffices: no request to the sandbox
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: float(decoded["iat"]))
                claims = await verifier.verify(header, [decoded["aud"]])
                assert claims == decoded
                with pytest.raises(AuthError, match="replayed"):
                    await verifier.verify(header, [decoded["aud"]])
            assert len(router.calls) == 0

    asyncio.run(scenario())


def test_real_sandbox_token_refused_without_preset_or_when_expired() -> None:
    _, req = SANDBOX_REQUESTS[0]
    header = req["request"]["headers"]["Authorization"]
    payload = req["jwt_decoded"]["payload"]

    async def scenario(trust: TrustConfig, now: float) -> None:
        async with httpx.AsyncClient() as http:
            await JwtVerifier(trust, http, clock=lambda: now).verify(header, [payload["aud"]])

    with pytest.raises(AuthError, match="unknown-issuer"):
        asyncio.run(scenario(load_trust(_settings()), float(payload["iat"])))
    with pytest.raises(AuthError, match="expired"):
        asyncio.run(scenario(load_trust(_settings(trust_preset="sandbox")), float(payload["exp"]) + 61))


def test_trust_file_with_inline_and_file_jwks(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ehr.json").write_text(json.dumps({"keys": [rsa_jwk(keys.rsa, "r")]}))
    path = _write(
        tmp_path,
        {
            "issuers": [
                {
                    "iss": "https://ehr.example.org",
                    "jku": ["https://ehr.example.org/jwks"],
                    "jwks": {"keys": [ec_jwk(keys.ec, "e")]},
                    "tenant": "hospital-a",
                },
                {
                    "iss": "https://other.example.org",
                    "jwks_file": "keys/ehr.json",
                    "algorithms": ["RS256", "RS384"],
                },
                {"iss": "https://fetch-only.example.org", "jku": "https://fetch-only.example.org/jwks"},
            ]
        },
    )
    trust = load_trust(_settings(trust_file=path))
    assert set(trust.issuers) == {
        "https://ehr.example.org",
        "https://other.example.org",
        "https://fetch-only.example.org",
    }
    ehr = trust.issuers["https://ehr.example.org"]
    assert ehr.algorithms == frozenset({"ES384", "RS384"}) and ehr.tenants == frozenset({"hospital-a"})
    assert set(trust.issuers["https://other.example.org"].static_keys) == {"r"}


def _ec(keys: Keys) -> dict[str, Any]:
    return {"keys": [ec_jwk(keys.ec, "e")]}


MALFORMED: list[tuple[str, Any, str]] = [
    ("not-yaml", "issuers: [unclosed", "not valid YAML"),
    ("top-level-list", "- iss: x", "top level"),
    ("extra-top-key", {"issuers": [], "other": 1}, "top level"),
    ("issuers-not-list", {"issuers": {"iss": "x"}}, "must be a list"),
    ("missing-iss", {"issuers": [{"jku": "https://a.example/j"}]}, "'iss'"),
    (
        "unknown-key",
        {"issuers": [{"iss": "x", "jku": "https://a.example/j", "algorithm": ["ES384"]}]},
        "unknown key",
    ),
    ("no-key-source", {"issuers": [{"iss": "x"}]}, "needs 'jku' or a static JWKS"),
    ("http-jku", {"issuers": [{"iss": "x", "jku": "http://a.example/j"}]}, "not an https URL"),
    (
        "hs256-allowed",
        {"issuers": [{"iss": "x", "jku": "https://a.example/j", "algorithms": ["HS256"]}]},
        "HS256",
    ),
    (
        "none-allowed",
        {"issuers": [{"iss": "x", "jku": "https://a.example/j", "algorithms": ["none"]}]},
        "none",
    ),
    ("dup-issuer", {"issuers": [{"iss": "x", "jku": "https://a.example/j"}] * 2}, "listed twice"),
    ("empty-tenant", {"issuers": [{"iss": "x", "jku": "https://a.example/j", "tenant": []}]}, "'tenant'"),
    ("missing-jwks-file", {"issuers": [{"iss": "x", "jwks_file": "nope.json"}]}, "cannot read jwks_file"),
    ("jwks-not-object", {"issuers": [{"iss": "x", "jwks": ["k"]}]}, "'keys' array"),
    ("empty-jwks", {"issuers": [{"iss": "x", "jwks": {"keys": []}}]}, "no keys"),
    (
        "oct-key",
        {"issuers": [{"iss": "x", "jwks": {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}}]},
        "symmetric",
    ),
]


@pytest.mark.parametrize(("case", "doc", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_trust_file_names_the_problem(tmp_path: Path, case: str, doc: Any, message: str) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=r"trust\.yaml") as err:
        load_trust(_settings(trust_file=path))
    assert message in str(err.value)


def test_key_problems_are_named(tmp_path: Path, keys: Keys) -> None:
    jwk = ec_jwk(keys.ec, "e")
    cases = [
        ({**jwk, "d": "AAAA"}, "private"),
        ({**jwk, "crv": "P-256"}, "wrong length"),
        ({**jwk, "y": jwk["x"]}, "not a valid EC"),  # point not on the curve
        ({**jwk, "use": "enc"}, "use='enc'"),
        ({k: v for k, v in jwk.items() if k != "kid"}, "no 'kid'"),
        ({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}, "not a valid RSA"),
    ]
    for key, message in cases:
        path = _write(tmp_path, {"issuers": [{"iss": "x", "jwks": {"keys": [key]}}]})
        with pytest.raises(ValueError, match=message):
            load_trust(_settings(trust_file=path))


def test_trust_file_and_preset_together_refuse_to_start(tmp_path: Path) -> None:
    """Issue 16: the sandbox preset (public signing key) used to merge silently into a production trust
    file. Together they now stop start-up, naming both settings."""
    path = _write(
        tmp_path, {"issuers": [{"iss": "https://ehr.example.org", "jku": "https://ehr.example.org/j"}]}
    )
    with pytest.raises(ValueError, match=r"VA_CDS_TRUST_FILE.*VA_CDS_TRUST_PRESET=sandbox"):
        load_trust(_settings(trust_file=path, trust_preset="sandbox"))


def test_missing_trust_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read trust file"):
        load_trust(_settings(trust_file=tmp_path / "absent.yaml"))
