"""Shared helpers for auth tests: our own EC P-384 / RSA keys, a token minter that can forge anything,
and a trust config with a static-JWKS issuer, a jku-only issuer and a tenant-bound issuer."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cds_service.auth import TrustConfig

NOW = 1_795_283_114.0  # fixed clock: never depend on wall time
ISS = "https://ehr.example.org"
JKU = "https://ehr.example.org/.well-known/jwks.json"
FETCH_ISS = "https://fetch.example.org"
FETCH_JKU = "https://fetch.example.org/jwks.json"
TENANT_ISS = "https://tenant.example.org"
ATTACKER_JKU = "https://attacker.example.net/jwks.json"
BASE = "https://cds.example.org/cds-services"
AUD = f"{BASE}/va-order-sign"
OTHER_AUD = f"{BASE}/other-service"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj: Any) -> str:
    return b64u(json.dumps(obj).encode())


def _uint(n: int, size: int | None = None) -> str:
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    return {
        "kty": "EC",
        "crv": crv,
        "kid": kid,
        "use": "sig",
        "x": _uint(nums.x, size),
        "y": _uint(nums.y, size),
    }


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": _uint(nums.n), "e": _uint(nums.e)}


def sign(alg: str, key: Any, signing_input: bytes) -> bytes:
    """JWS signature with any key, including deliberately wrong combinations."""
    hash_cls = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[alg[-3:]]
    if alg.startswith("ES"):
        der = key.sign(signing_input, ec.ECDSA(hash_cls()))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg.startswith("RS"):
        return key.sign(signing_input, padding.PKCS1v15(), hash_cls())  # type: ignore[no-any-return]
    raise ValueError(alg)


@dataclass
class Keys:
    ec: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    rsa: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec256: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    fetched: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    rotated: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    attacker: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def static_jwks(keys: Keys) -> dict[str, Any]:
    return {"keys": [ec_jwk(keys.ec, "ec-1"), rsa_jwk(keys.rsa, "rsa-1"), ec_jwk(keys.ec256, "ec256-1")]}


@pytest.fixture
def trust(static_jwks: dict[str, Any], keys: Keys) -> TrustConfig:
    return TrustConfig.from_mapping(
        {
            "issuers": [
                {"iss": ISS, "jku": [JKU], "jwks": static_jwks, "algorithms": ["ES384", "RS384"]},
                {"iss": FETCH_ISS, "jku": FETCH_JKU},
                {"iss": TENANT_ISS, "jwks": {"keys": [ec_jwk(keys.ec, "ec-t")]}, "tenant": ["hospital-a"]},
            ]
        }
    )


Minter = Callable[..., str]


@pytest.fixture
def mint(keys: Keys) -> Minter:
    """mint(header_overrides, payload_overrides, key=..., alg=...) → compact JWS.

    Overrides set to `None` delete the member, so "missing X" cases read naturally.
    """

    def _mint(
        header: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        *,
        key: Any = None,
        sign_alg: str | None = None,
    ) -> str:
        h: dict[str, Any] = {"alg": "ES384", "typ": "JWT", "kid": "ec-1"}
        p: dict[str, Any] = {
            "iss": ISS,
            "aud": AUD,
            "iat": int(NOW),
            "exp": int(NOW) + 300,
            "jti": str(uuid.uuid4()),
        }
        for target, overrides in ((h, header), (p, payload)):
            for k, v in (overrides or {}).items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        signing_input = f"{b64u_json(h)}.{b64u_json(p)}".encode()
        alg = sign_alg or h["alg"]
        if key is None:
            key = keys.rsa if alg.startswith("RS") else keys.ec
        return f"{signing_input.decode()}.{b64u(sign(alg, key, signing_input))}"

    return _mint
