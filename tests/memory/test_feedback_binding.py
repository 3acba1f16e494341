"""Feedback bound to its card (issue 16 item 4) and memory that never crosses issuers or tenants, with
real signed JWTs through the app, on SQLite and PostgreSQL.

A card is known only to the issuer and tenant it was sent to, through the service that sent it. Feedback
from anyone else is answered exactly like feedback about an unknown card, is never used (override report,
memory), and never turns the genuine report into a "duplicate".
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cds_service.persistence import UNATTRIBUTED
from tests.memory.conftest import (
    ANTICOAG,
    SERVICE,
    SERVICES,
    Chart,
    Clock,
    MemoryClient,
    by_rule,
    make_app_client,
)

BASE = "https://cds.example.org"
ISS_A = "https://ehr-a.example.org"
ISS_B = "https://ehr-b.example.org"
ISS_T = "https://multi-tenant.example.org"
OTHER_SERVICE = replace(SERVICE, id="memory-test-other")


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "kid": kid,
        "use": "sig",
        "x": _b64u(nums.x.to_bytes(32, "big")),
        "y": _b64u(nums.y.to_bytes(32, "big")),
    }


class Tokens:
    """Signs CDS Hooks client JWTs for three issuers (one of them multi-tenant)."""

    def __init__(self) -> None:
        self.keys = {iss: ec.generate_private_key(ec.SECP256R1()) for iss in (ISS_A, ISS_B, ISS_T)}

    def trust(self) -> dict[str, Any]:
        issuers: list[dict[str, Any]] = []
        for n, (iss, key) in enumerate(self.keys.items()):
            entry: dict[str, Any] = {
                "iss": iss,
                "jwks": {"keys": [_jwk(key, f"k{n}")]},
                "algorithms": ["ES256"],
            }
            if iss == ISS_T:
                entry["tenant"] = ["hospital-1", "hospital-2"]
            issuers.append(entry)
        return {"issuers": issuers}

    def header(self, iss: str, path: str, tenant: str | None = None) -> dict[str, str]:
        kid = f"k{list(self.keys).index(iss)}"
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": iss,
            "aud": f"{BASE}{path}",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        if tenant is not None:
            payload["tenant"] = tenant
        head = {"alg": "ES256", "typ": "JWT", "kid": kid}
        signing = f"{_b64u(json.dumps(head).encode())}.{_b64u(json.dumps(payload).encode())}".encode()
        r, s = decode_dss_signature(self.keys[iss].sign(signing, ec.ECDSA(hashes.SHA256())))
        sig = _b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return {"Authorization": f"Bearer {signing.decode()}.{sig}"}


class Caller:
    """One EHR (issuer, tenant) talking to the app."""

    def __init__(self, mem: MemoryClient, tokens: Tokens, iss: str, tenant: str | None = None) -> None:
        self.mem, self.tokens, self.iss, self.tenant = mem, tokens, iss, tenant

    def call(self, chart: Chart, service_id: str = SERVICE.id) -> dict[str, dict[str, Any]]:
        mem = MemoryClient(self.mem.http, self.mem.clock, {"order-sign": service_id})
        headers = self.tokens.header(self.iss, f"/cds-services/{service_id}", self.tenant)
        return by_rule(mem.call(chart, headers=headers))

    def feedback(self, card: dict[str, Any], service_id: str = SERVICE.id, **kw: Any) -> dict[str, Any]:
        headers = self.tokens.header(self.iss, f"/cds-services/{service_id}/feedback", self.tenant)
        return self.mem.feedback(card, headers=headers, service_id=service_id, **kw)


@pytest.fixture
def mem(db_url: str, clock: Clock, tmp_path: Path) -> Iterator[tuple[MemoryClient, Tokens]]:
    tokens = Tokens()
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump(tokens.trust()))
    client = make_app_client(
        db_url,
        clock,
        tmp_path,
        services=[*SERVICES, OTHER_SERVICE],
        auth_mode="required",
        trust_file=trust,
        public_base_url=BASE,
    )
    with client:
        yield MemoryClient(client, clock), tokens


def test_feedback_from_another_issuer_is_answered_like_an_unknown_card_and_never_used(
    mem: tuple[MemoryClient, Tokens],
) -> None:
    client, tokens = mem
    a, b = Caller(client, tokens, ISS_A), Caller(client, tokens, ISS_B)
    card = a.call(Chart())[ANTICOAG]

    unknown = {"uuid": str(uuid.uuid4())}
    assert b.feedback(unknown) == {"received": 1, "stored": 1}
    assert b.feedback(card, reason="not-applicable") == {"received": 1, "stored": 1}  # exactly alike
    assert a.call(Chart())[ANTICOAG]["indicator"] == "warning"  # B's report is not used for A's card

    # The genuine report, same card, outcome and instant as B's: stored, not a "duplicate"; and used.
    assert a.feedback(card, reason="benefit-outweighs-risk") == {"received": 1, "stored": 1}
    assert a.feedback(card, reason="benefit-outweighs-risk") == {"received": 1, "stored": 0}  # a real resend
    again = a.call(Chart())[ANTICOAG]
    assert again["indicator"] == "info"
    assert again["extension"]["org.va-cds.memory"]["remembered"][0]["reasonCode"] == "benefit-outweighs-risk"

    report = {s.rule_id: s for s in client.state.store.override_report(None)}
    assert report[ANTICOAG].overridden == 1
    assert report[ANTICOAG].top_reasons == (("benefit-outweighs-risk", 1),)  # A's reason, not B's
    assert report[UNATTRIBUTED].overridden == 2  # B's two reports: the unknown card and the foreign one


def test_memory_never_crosses_issuers(mem: tuple[MemoryClient, Tokens]) -> None:
    client, tokens = mem
    a, b = Caller(client, tokens, ISS_A), Caller(client, tokens, ISS_B)
    card = a.call(Chart())[ANTICOAG]
    a.feedback(card)
    assert a.call(Chart())[ANTICOAG]["indicator"] == "info"
    from_b = b.call(Chart())[ANTICOAG]  # same patient id, same data, another EHR
    assert from_b["indicator"] == "warning" and "org.va-cds.memory" not in from_b["extension"]


def test_memory_and_feedback_never_cross_tenants(mem: tuple[MemoryClient, Tokens]) -> None:
    client, tokens = mem
    one, two = Caller(client, tokens, ISS_T, "hospital-1"), Caller(client, tokens, ISS_T, "hospital-2")
    card = one.call(Chart())[ANTICOAG]
    assert two.feedback(card) == {"received": 1, "stored": 1}
    assert one.call(Chart())[ANTICOAG]["indicator"] == "warning"  # the other tenant's report is unused
    one.feedback(card)
    assert one.call(Chart())[ANTICOAG]["indicator"] == "info"
    assert two.call(Chart())[ANTICOAG]["indicator"] == "warning"  # hospital-1's override stays there


def test_feedback_through_another_service_id_is_not_bound_to_the_card(
    mem: tuple[MemoryClient, Tokens],
) -> None:
    client, tokens = mem
    a = Caller(client, tokens, ISS_A)
    card = a.call(Chart())[ANTICOAG]
    assert a.feedback(card, service_id=OTHER_SERVICE.id) == {"received": 1, "stored": 1}
    assert a.call(Chart())[ANTICOAG]["indicator"] == "warning"
    assert a.feedback(card) == {"received": 1, "stored": 1}  # through the right service: new, and used
    assert a.call(Chart())[ANTICOAG]["indicator"] == "info"
