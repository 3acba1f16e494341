"""JwtVerifier: forged and broken tokens are refused with the right reason; valid ones pass."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.auth import AuthError, JwtVerifier, TrustConfig, www_authenticate

from .conftest import (
    ATTACKER_JKU,
    AUD,
    BASE,
    ISS,
    JKU,
    NOW,
    OTHER_AUD,
    TENANT_ISS,
    Keys,
    Minter,
    b64u,
    b64u_json,
    ec_jwk,
    sign,
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _verify(trust: TrustConfig, header: str | None, audiences: list[str], **kw: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        verifier = JwtVerifier(trust, http, clock=lambda: NOW, **kw)
        return await verifier.verify(header, audiences)


def _hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64u_json(header)}.{b64u_json(payload)}".encode()
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(signing_input)
    return f"{signing_input.decode()}.{b64u(mac.finalize())}"


def _unsigned(header: dict[str, Any], payload: dict[str, Any], sig: str = "") -> str:
    return f"{b64u_json(header)}.{b64u_json(payload)}.{sig}"


_PAYLOAD = {"iss": ISS, "aud": AUD, "iat": int(NOW), "exp": int(NOW) + 300, "jti": "j-1"}


def _tamper_payload(token: str) -> str:
    h, _, s = token.split(".")
    return f"{h}.{b64u_json({**_PAYLOAD, 'aud': [AUD, 'x']})}.{s}"


def _dup_member(mint: Minter, keys: Keys) -> str:
    # Valid signature over a payload with two `aud` members: must be refused before it is trusted.
    h = b64u_json({"alg": "ES384", "typ": "JWT", "kid": "ec-1"})
    times = f'"iat":{int(NOW)},"exp":{int(NOW) + 300}'
    body = f'{{"iss":"{ISS}","aud":"{OTHER_AUD}","aud":"{AUD}",{times},"jti":"d"}}'
    p = b64u(body.encode())
    return f"{h}.{p}.{b64u(sign('ES384', keys.ec, f'{h}.{p}'.encode()))}"


def _pub_pem(keys: Keys) -> bytes:
    return keys.ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# (case id, build(mint, keys) -> Authorization header value or None, expected AuthError.reason)
Build = Callable[[Minter, Keys], str | None]
FORGED: list[tuple[str, Build, str]] = [
    ("no-header", lambda m, k: None, "missing-token"),
    ("empty-header", lambda m, k: "", "missing-token"),
    ("missing-bearer-prefix", lambda m, k: m(), "bad-scheme"),
    ("basic-scheme", lambda m, k: "Basic dXNlcjpwYXNz", "bad-scheme"),
    ("bearer-without-token", lambda m, k: "Bearer ", "bad-scheme"),
    ("oversized", lambda m, k: "Bearer " + m(payload={"pad": "x" * 9000}), "token-too-large"),
    ("garbage-base64", lambda m, k: "Bearer !!!.@@@.###", "malformed"),
    ("two-segments", lambda m, k: "Bearer " + ".".join(m().split(".")[:2]), "malformed"),
    ("jwe-five-segments", lambda m, k: "Bearer " + m() + ".a.b", "malformed"),
    ("padded-base64", lambda m, k: "Bearer " + m().replace(".", "==.", 1), "malformed"),
    (
        "standard-alphabet",
        lambda m, k: "Bearer " + m().replace("-", "+").replace("_", "/") + "+/",
        "malformed",
    ),
    ("header-not-json", lambda m, k: f"Bearer {b64u(b'not json')}.{b64u_json(_PAYLOAD)}.AAAA", "malformed"),
    ("header-json-array", lambda m, k: f"Bearer {b64u_json([1])}.{b64u_json(_PAYLOAD)}.AAAA", "malformed"),
    ("duplicate-json-member", lambda m, k: "Bearer " + _dup_member(m, k), "malformed"),
    (
        "alg-none-empty-sig",
        lambda m, k: "Bearer " + _unsigned({"alg": "none", "typ": "JWT", "kid": "ec-1"}, _PAYLOAD),
        "bad-alg",
    ),
    (
        "alg-None-with-sig",
        lambda m, k: "Bearer " + _unsigned({"alg": "None", "kid": "ec-1"}, _PAYLOAD, "AAAA"),
        "bad-alg",
    ),
    (
        "alg-missing",
        lambda m, k: "Bearer " + _unsigned({"typ": "JWT", "kid": "ec-1"}, _PAYLOAD, "AAAA"),
        "bad-alg",
    ),
    (
        "hs256-signed-with-public-key-pem",
        lambda m, k: "Bearer " + _hs256({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}, _PAYLOAD, _pub_pem(k)),
        "bad-alg",
    ),
    (
        "hs256-signed-with-jwk-json",
        lambda m, k: (
            "Bearer "
            + _hs256({"alg": "HS256", "kid": "ec-1"}, _PAYLOAD, json.dumps(ec_jwk(k.ec, "ec-1")).encode())
        ),
        "bad-alg",
    ),
    (
        "es256-not-configured-for-issuer",
        lambda m, k: "Bearer " + m({"alg": "ES256", "kid": "ec256-1"}, key=k.ec256),
        "bad-alg",
    ),
    (
        "eddsa-unsupported",
        lambda m, k: "Bearer " + _unsigned({"alg": "EdDSA", "kid": "ec-1"}, _PAYLOAD, "AAAA"),
        "bad-alg",
    ),
    ("wrong-typ", lambda m, k: "Bearer " + m({"typ": "at+jwt"}), "bad-typ"),
    # CDS Hooks 2.0: typ is REQUIRED ("JWT"); a token without it is refused (issue 16).
    ("missing-typ", lambda m, k: "Bearer " + m({"typ": None}), "bad-typ"),
    ("crit-header", lambda m, k: "Bearer " + m({"crit": ["exp"], "exp": 1}), "unsupported-header"),
    ("missing-kid-header", lambda m, k: "Bearer " + m({"kid": None}), "missing-kid"),
    ("missing-iss", lambda m, k: "Bearer " + m(payload={"iss": None}), "missing-claim"),
    (
        "unknown-issuer",
        lambda m, k: "Bearer " + m(payload={"iss": "https://evil.example.net"}),
        "unknown-issuer",
    ),
    ("issuer-differs-by-slash", lambda m, k: "Bearer " + m(payload={"iss": ISS + "/"}), "unknown-issuer"),
    (
        "jku-not-allowlisted",
        lambda m, k: "Bearer " + m({"jku": ATTACKER_JKU, "kid": "evil"}, key=k.attacker),
        "jku-not-allowed",
    ),
    (
        "unknown-kid",
        lambda m, k: "Bearer " + m({"kid": "nope"}, {"iss": TENANT_ISS, "tenant": "hospital-a"}),
        "unknown-kid",
    ),
    ("signed-by-other-key-same-kid", lambda m, k: "Bearer " + m(key=k.attacker), "bad-signature"),
    ("tampered-payload", lambda m, k: "Bearer " + _tamper_payload(m()), "bad-signature"),
    (
        "rs384-header-ec-kid",
        lambda m, k: "Bearer " + m({"alg": "RS384", "kid": "ec-1"}, key=k.rsa),
        "bad-signature",
    ),
    ("es384-header-rsa-kid", lambda m, k: "Bearer " + m({"alg": "ES384", "kid": "rsa-1"}), "bad-signature"),
    ("truncated-signature", lambda m, k: "Bearer " + m()[:-8], "bad-signature"),
    ("missing-aud", lambda m, k: "Bearer " + m(payload={"aud": None}), "missing-claim"),
    ("missing-exp", lambda m, k: "Bearer " + m(payload={"exp": None}), "missing-claim"),
    ("missing-iat", lambda m, k: "Bearer " + m(payload={"iat": None}), "missing-claim"),
    ("missing-jti", lambda m, k: "Bearer " + m(payload={"jti": None}), "missing-claim"),
    ("exp-not-a-number", lambda m, k: "Bearer " + m(payload={"exp": str(int(NOW) + 300)}), "invalid-claim"),
    ("exp-boolean", lambda m, k: "Bearer " + m(payload={"exp": True}), "invalid-claim"),
    ("aud-empty-list", lambda m, k: "Bearer " + m(payload={"aud": []}), "invalid-claim"),
    ("jti-empty", lambda m, k: "Bearer " + m(payload={"jti": ""}), "invalid-claim"),
    (
        "wrong-aud",
        lambda m, k: "Bearer " + m(payload={"aud": "https://elsewhere.example.com/cds-services"}),
        "bad-aud",
    ),
    ("aud-of-another-service", lambda m, k: "Bearer " + m(payload={"aud": OTHER_AUD}), "bad-aud"),
    ("aud-discovery-url-on-service", lambda m, k: "Bearer " + m(payload={"aud": BASE}), "bad-aud"),
    ("aud-prefix-only", lambda m, k: "Bearer " + m(payload={"aud": AUD + "x"}), "bad-aud"),
    ("expired", lambda m, k: "Bearer " + m(payload={"iat": int(NOW) - 600, "exp": int(NOW) - 61}), "expired"),
    ("not-yet-valid-nbf", lambda m, k: "Bearer " + m(payload={"nbf": int(NOW) + 120}), "not-yet-valid"),
    (
        "iat-in-future",
        lambda m, k: "Bearer " + m(payload={"iat": int(NOW) + 120, "exp": int(NOW) + 400}),
        "iat-in-future",
    ),
    ("lifetime-too-long", lambda m, k: "Bearer " + m(payload={"exp": int(NOW) + 86400}), "lifetime-too-long"),
    (
        "tenant-missing",
        lambda m, k: "Bearer " + m({"kid": "ec-t"}, {"iss": TENANT_ISS}),
        "tenant-not-allowed",
    ),
    (
        "tenant-wrong",
        lambda m, k: "Bearer " + m({"kid": "ec-t"}, {"iss": TENANT_ISS, "tenant": "hospital-b"}),
        "tenant-not-allowed",
    ),
]


@pytest.mark.parametrize(("case", "build", "reason"), FORGED, ids=[c[0] for c in FORGED])
def test_forged_or_broken_token_is_refused(
    case: str, build: Build, reason: str, mint: Minter, keys: Keys, trust: TrustConfig
) -> None:
    header = build(mint, keys)
    # respx with no pass-through: any network request at all would fail the test, and the attacker's
    # jku route proves the non-allowlisted URL was never contacted.
    with respx.mock(assert_all_called=False) as router:
        attacker = router.get(ATTACKER_JKU).respond(json={"keys": [ec_jwk(keys.attacker, "evil")]})
        router.get(JKU).respond(json={"keys": []})
        with pytest.raises(AuthError) as err:
            run(_verify(trust, header, [AUD]))
        assert attacker.call_count == 0
    assert err.value.reason == reason, err.value
    # Nothing of the token leaks into what the client or the logs are told.
    challenge = www_authenticate(err.value.reason)
    if header:
        token = header.partition(" ")[2]
        for part in token.split("."):
            if len(part) > 8:
                assert part not in challenge
                assert part not in str(err.value)


def test_at_least_fifteen_forgeries() -> None:
    assert len(FORGED) >= 15


def test_jku_not_allowlisted_makes_no_request(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    token = mint({"jku": ATTACKER_JKU, "kid": "evil"}, key=keys.attacker)
    with respx.mock(assert_all_called=False) as router:
        attacker = router.route(host="attacker.example.net").respond(
            json={"keys": [ec_jwk(keys.attacker, "evil")]}
        )
        with pytest.raises(AuthError, match="jku-not-allowed"):
            run(_verify(trust, f"Bearer {token}", [AUD]))
        assert not attacker.called
        assert len(router.calls) == 0


def test_replayed_jti_is_refused(mint: Minter, trust: TrustConfig) -> None:
    header = "Bearer " + mint(payload={"jti": "once"})

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = JwtVerifier(trust, http, clock=lambda: NOW)
            await verifier.verify(header, [AUD])
            with pytest.raises(AuthError) as err:
                await verifier.verify(header, [AUD])
            assert err.value.reason == "replayed"
            # Same jti, another issuer: a different nonce space, accepted.
            other = "Bearer " + mint(
                {"kid": "ec-t"}, {"iss": TENANT_ISS, "tenant": "hospital-a", "jti": "once"}
            )
            await verifier.verify(other, [AUD])

    run(scenario())


def test_refused_token_does_not_consume_its_jti(mint: Minter, trust: TrustConfig) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = JwtVerifier(trust, http, clock=lambda: NOW)
            token = "Bearer " + mint(payload={"jti": "j"})
            with pytest.raises(AuthError, match="bad-aud"):
                await verifier.verify(token, [OTHER_AUD])
            await verifier.verify(token, [AUD])

    run(scenario())


def test_replay_cache_is_bounded_and_fails_closed(mint: Minter, trust: TrustConfig) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = JwtVerifier(trust, http, clock=lambda: NOW, replay_cache_size=2)
            await verifier.verify("Bearer " + mint(), [AUD])
            await verifier.verify("Bearer " + mint(), [AUD])
            with pytest.raises(AuthError) as err:
                await verifier.verify("Bearer " + mint(), [AUD])
            assert err.value.reason == "replay-cache-full"

    run(scenario())


def test_replay_entries_expire_with_the_token(mint: Minter, trust: TrustConfig) -> None:
    now = [NOW]

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = JwtVerifier(trust, http, clock=lambda: now[0], replay_cache_size=1)
            await verifier.verify("Bearer " + mint(), [AUD])
            now[0] = NOW + 300 + 61  # first token is past exp + leeway: its entry is dropped
            fresh = mint(payload={"iat": int(now[0]), "exp": int(now[0]) + 300})
            await verifier.verify("Bearer " + fresh, [AUD])

    run(scenario())


@pytest.mark.parametrize(("alg", "kid"), [("ES384", "ec-1"), ("RS384", "rsa-1")], ids=["ES384", "RS384"])
def test_valid_tokens_pass(alg: str, kid: str, mint: Minter, trust: TrustConfig) -> None:
    claims = run(_verify(trust, "Bearer " + mint({"alg": alg, "kid": kid}), [AUD]))
    assert claims["iss"] == ISS and claims["aud"] == AUD
    assert "sub" not in claims  # 2.0 defines no sub, and we do not require it


def test_valid_token_variants(mint: Minter, trust: TrustConfig) -> None:
    # Array aud, lower-case scheme, typ in lower case or as a media type, allowlisted jku naming a static key
    # (no fetch), nbf in the past,
    # and clock skew inside the leeway on both sides.
    cases = [
        mint(payload={"aud": [OTHER_AUD, AUD]}),
        mint({"typ": "jwt"}),
        mint({"typ": "application/jwt"}),
        mint({"jku": JKU}),
        mint(payload={"nbf": int(NOW) - 10}),
        mint(payload={"iat": int(NOW) + 30, "exp": int(NOW) + 330}),
        mint(payload={"iat": int(NOW) - 330, "exp": int(NOW) - 30}),
        mint({"kid": "ec-t"}, {"iss": TENANT_ISS, "tenant": "hospital-a"}),
    ]
    with respx.mock() as router:  # no routes: any request fails
        for token in cases:
            run(_verify(trust, "bearer " + token, [AUD]))
        assert len(router.calls) == 0


def test_feedback_accepts_feedback_or_service_url(mint: Minter, trust: TrustConfig) -> None:
    audiences = [f"{AUD}/feedback", AUD]
    run(_verify(trust, "Bearer " + mint(payload={"aud": f"{AUD}/feedback"}), audiences))
    run(_verify(trust, "Bearer " + mint(payload={"aud": AUD}), audiences))
    with pytest.raises(AuthError, match="bad-aud"):
        run(_verify(trust, "Bearer " + mint(payload={"aud": OTHER_AUD}), audiences))


def test_empty_audiences_accept_nothing(mint: Minter, trust: TrustConfig) -> None:
    with pytest.raises(AuthError, match="bad-aud"):
        run(_verify(trust, "Bearer " + mint(), []))


def test_empty_trust_refuses_everything(mint: Minter) -> None:
    with pytest.raises(AuthError, match="unknown-issuer"):
        run(_verify(TrustConfig(), "Bearer " + mint(), [AUD]))


def test_es256_when_configured(keys: Keys, mint: Minter) -> None:
    trust = TrustConfig.from_mapping(
        {"issuers": [{"iss": ISS, "jwks": {"keys": [ec_jwk(keys.ec256, "k")]}, "algorithms": ["ES256"]}]}
    )
    run(_verify(trust, "Bearer " + mint({"alg": "ES256", "kid": "k"}, key=keys.ec256), [AUD]))
    # A P-384 key cannot be used with ES256 even if someone publishes it under that kid.
    with pytest.raises(AuthError, match="bad-signature"):
        run(
            _verify(
                trust,
                "Bearer " + mint({"alg": "ES256", "kid": "k"}, key=ec.generate_private_key(ec.SECP256R1())),
                [AUD],
            )
        )


def test_header_and_payload_base64_is_url_safe_only(mint: Minter, trust: TrustConfig) -> None:
    token = mint()
    h, p, s = token.split(".")
    std = base64.b64encode(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))).decode()
    if std.rstrip("=") != s:  # only meaningful when the signature has - or _ characters
        with pytest.raises(AuthError, match="malformed"):
            run(_verify(trust, f"Bearer {h}.{p}.{std}", [AUD]))


def test_www_authenticate_is_short_and_generic() -> None:
    # Every 401 says why, a missing token included (issue 16); never anything from the request.
    assert www_authenticate("missing-token") == (
        'Bearer realm="cds-services", error="invalid_request", error_description="bearer token required"'
    )
    assert www_authenticate("expired") == (
        'Bearer realm="cds-services", error="invalid_token", error_description="token expired"'
    )
    # Pre-signature failures all look alike, so they do not map the allowlist for an attacker.
    generic = {
        www_authenticate(r)
        for r in ("unknown-issuer", "unknown-kid", "bad-signature", "jku-not-allowed", "bad-alg")
    }
    assert generic == {
        'Bearer realm="cds-services", error="invalid_token", error_description="invalid token"'
    }
    assert 'error="invalid_request"' in www_authenticate("bad-scheme")
    assert "invalid token" in www_authenticate('x", injected="1')


def test_auth_error_reason_is_bounded() -> None:
    assert AuthError("not-a-known-reason").reason == "malformed"
    assert AuthError("expired", "detail").detail == "detail"


def test_uuid_jtis_from_many_calls_all_pass(mint: Minter, trust: TrustConfig) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            verifier = JwtVerifier(trust, http, clock=lambda: NOW)
            for _ in range(50):
                await verifier.verify("Bearer " + mint(payload={"jti": str(uuid.uuid4())}), [AUD])

    run(scenario())
