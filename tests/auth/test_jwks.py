"""JWKS from allowlisted jku URLs: fetched once and cached, refetched once on an unknown kid with a
rate limit, bounded by a timeout, never following redirects."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import respx

from cds_service.auth import AuthError, JwtVerifier, TrustConfig

from .conftest import AUD, FETCH_ISS, FETCH_JKU, NOW, Keys, Minter, ec_jwk


def _token(mint: Minter, keys: Keys, kid: str = "f-1", key: Any = None, jku: bool = True) -> str:
    header: dict[str, Any] = {"kid": kid, "jku": FETCH_JKU if jku else None}
    return "Bearer " + mint(header, {"iss": FETCH_ISS}, key=key or keys.fetched)


def test_fetched_from_allowlisted_jku_and_cached(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    async def scenario() -> None:
        with respx.mock() as router:
            route = router.get(FETCH_JKU).respond(json={"keys": [ec_jwk(keys.fetched, "f-1")]})
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: NOW)
                await verifier.verify(_token(mint, keys), [AUD])
                assert route.call_count == 1
                await verifier.verify(_token(mint, keys), [AUD])
                # Token without jku: the issuer's configured jku is used, from the same cache.
                await verifier.verify(_token(mint, keys, jku=False), [AUD])
                assert route.call_count == 1

    asyncio.run(scenario())


def test_refetched_once_on_unknown_kid_after_rotation(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    now = [NOW]

    async def scenario() -> None:
        with respx.mock() as router:
            route = router.get(FETCH_JKU).mock(
                side_effect=[
                    httpx.Response(200, json={"keys": [ec_jwk(keys.fetched, "f-1")]}),
                    httpx.Response(200, json={"keys": [ec_jwk(keys.rotated, "f-2")]}),
                ]
            )
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: now[0], jwks_min_refetch_s=30)
                await verifier.verify(_token(mint, keys), [AUD])
                now[0] += 31  # past the refetch interval; well inside the TTL
                await verifier.verify(_token(mint, keys, kid="f-2", key=keys.rotated), [AUD])
                assert route.call_count == 2
                # f-1 was rotated out: refused, and the rate limit stops another fetch.
                with pytest.raises(AuthError) as err:
                    await verifier.verify(_token(mint, keys), [AUD])
                assert err.value.reason == "unknown-kid"
                assert route.call_count == 2

    asyncio.run(scenario())


def test_unknown_kid_storm_is_rate_limited(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    now = [NOW]

    async def scenario() -> None:
        with respx.mock() as router:
            route = router.get(FETCH_JKU).respond(json={"keys": [ec_jwk(keys.fetched, "f-1")]})
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: now[0], jwks_min_refetch_s=30)
                await verifier.verify(_token(mint, keys), [AUD])
                for i in range(20):
                    with pytest.raises(AuthError, match="unknown-kid"):
                        await verifier.verify(_token(mint, keys, kid=f"random-{i}"), [AUD])
                assert route.call_count == 1  # all within the interval after the first fetch
                now[0] += 31
                results = await asyncio.gather(
                    *(verifier.verify(_token(mint, keys, kid=f"burst-{i}"), [AUD]) for i in range(20)),
                    return_exceptions=True,
                )
                assert all(isinstance(r, AuthError) and r.reason == "unknown-kid" for r in results)
                assert route.call_count == 2  # concurrent burst: one refetch, not twenty

    asyncio.run(scenario())


def test_ttl_expiry_refreshes(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    now = [NOW]

    async def scenario() -> None:
        with respx.mock() as router:
            route = router.get(FETCH_JKU).respond(json={"keys": [ec_jwk(keys.fetched, "f-1")]})
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: now[0], jwks_ttl_s=600)
                await verifier.verify(_token(mint, keys), [AUD])
                now[0] += 601
                token = mint(
                    {"kid": "f-1", "jku": FETCH_JKU},
                    {"iss": FETCH_ISS, "iat": int(now[0]), "exp": int(now[0]) + 300},
                    key=keys.fetched,
                )
                await verifier.verify("Bearer " + token, [AUD])
                assert route.call_count == 2

    asyncio.run(scenario())


def test_stale_keys_survive_a_failed_refresh(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    now = [NOW]

    async def scenario() -> None:
        with respx.mock() as router:
            router.get(FETCH_JKU).mock(
                side_effect=[
                    httpx.Response(200, json={"keys": [ec_jwk(keys.fetched, "f-1")]}),
                    httpx.ConnectError("down"),
                ]
            )
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: now[0], jwks_ttl_s=600)
                await verifier.verify(_token(mint, keys), [AUD])
                now[0] += 601
                token = mint(
                    {"kid": "f-1", "jku": FETCH_JKU},
                    {"iss": FETCH_ISS, "iat": int(now[0]), "exp": int(now[0]) + 300},
                    key=keys.fetched,
                )
                await verifier.verify("Bearer " + token, [AUD])

    asyncio.run(scenario())


class _HangingTransport(httpx.AsyncBaseTransport):
    """A JWKS server that accepts the connection and never answers."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_jku_timeout_is_an_auth_error_not_a_hang(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    transport = _HangingTransport()

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=transport) as http:
            verifier = JwtVerifier(trust, http, clock=lambda: NOW, jwks_timeout_s=0.2)
            started = time.monotonic()
            with pytest.raises(AuthError) as err:
                await verifier.verify(_token(mint, keys), [AUD])
            assert time.monotonic() - started < 2
            assert err.value.reason == "jwks-unavailable"
            # The failure is rate-limited too: an immediate retry does not hit the dead server again.
            with pytest.raises(AuthError, match="jwks-unavailable"):
                await verifier.verify(_token(mint, keys), [AUD])
            assert transport.requests == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(302, headers={"Location": "https://attacker.example.net/jwks.json"}),
        httpx.Response(500),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"no": "keys"}),
        httpx.Response(
            200, json={"keys": [{"kty": "EC", "kid": "f-1", "crv": "P-384", "x": "AA", "y": "AA"}] * 2}
        ),
        httpx.Response(200, content=b'{"keys":[' + b'{"kty":"oct","k":"AAAA","kid":"x"},' * 5000 + b"{}]}"),
    ],
    ids=["redirect", "http-500", "not-json", "no-keys-array", "bad-key", "too-large"],
)
def test_bad_jwks_responses(response: httpx.Response, mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    async def scenario() -> None:
        with respx.mock(assert_all_called=False) as router:
            router.get(FETCH_JKU).mock(return_value=response)
            attacker = router.get("https://attacker.example.net/jwks.json").respond(
                json={"keys": [ec_jwk(keys.fetched, "f-1")]}
            )
            async with httpx.AsyncClient(follow_redirects=True) as http:
                verifier = JwtVerifier(trust, http, clock=lambda: NOW)
                with pytest.raises(AuthError) as err:
                    await verifier.verify(_token(mint, keys), [AUD])
                assert err.value.reason in ("jwks-unavailable", "unknown-kid")
                assert not attacker.called  # redirects are not followed even if the client would

    asyncio.run(scenario())


def test_fetched_private_or_symmetric_keys_are_skipped(mint: Minter, keys: Keys, trust: TrustConfig) -> None:
    jwk = ec_jwk(keys.fetched, "f-1")
    leaked = {**jwk, "d": "AAAA"}

    async def scenario() -> None:
        with respx.mock() as router:
            router.get(FETCH_JKU).respond(
                json={"keys": [leaked, {"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}]}
            )
            async with httpx.AsyncClient() as http:
                verifier = JwtVerifier(trust, http, clock=lambda: NOW)
                with pytest.raises(AuthError, match="unknown-kid"):
                    await verifier.verify(_token(mint, keys), [AUD])

    asyncio.run(scenario())
